"""Volumes: CT-RATE NIfTI to model-ready .npy per preprocessing profile.

- :mod:`~rad3d_pipeline.volumes.io`: readers (nibabel header + whole-buffer inflate, SimpleITK),
  one axis order ``(D, H, W)``, atomic .npy writes with their sha256;
- :mod:`~rad3d_pipeline.volumes.version`: CT-RATE v1/v2 detection, so the HU rescale runs once;
- :mod:`~rad3d_pipeline.volumes.steps`: the named steps (rescale, clip, resample, normalise,
  crop/pad, layout);
- :mod:`~rad3d_pipeline.volumes.profiles`: ``ctclip``, ``m3d`` and custom YAML profiles;
- :mod:`~rad3d_pipeline.volumes.runner`: discovery, validation and quarantine, skip-on-rerun,
  worker pool, the manifest;
- :mod:`~rad3d_pipeline.volumes.memory`: peak memory per volume;
- :mod:`~rad3d_pipeline.volumes.reference`: the models' published procedures, for tests and
  the benchmark.
"""
