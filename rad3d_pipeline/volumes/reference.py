"""The models' own published preprocessing, reimplemented as directly as their code reads.

These are the yardsticks the profiles are tested and benchmarked against; they are
deliberately straightforward (float64 where the original is, whole-volume copies, no
fusion), not used by the pipeline itself.

- :func:`ctclip_reference`: CT-CLIP's preprocessing and data loader: nibabel ``get_fdata``,
  ``slope * data + intercept``, clip to [-1000, 1000], ``transpose(2, 0, 1)``, torch
  ``F.interpolate(size=int(n * current / target), mode="trilinear", align_corners=False)`` to
  (1.5, 0.75, 0.75) mm, back to ``(h, w, d)``, ``/ 1000`` as float32, centre crop, pad with -1 to
  480 x 480 x 240, ``permute(2, 0, 1)``: ``(240, 480, 480)``.
- :func:`m3d_reference`: the M3D preparation: ``sitk.ReadImage``, ``resize_image_itk`` (a
  ``ResampleImageFilter`` with the image as reference, size 256 x 256 x 32, spacing scaled by
  old/new size, identity transform, linear), ``GetArrayFromImage``, min-max to [0, 1],
  float32, a leading channel axis: ``(1, 32, 256, 256)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np


def ctclip_reference(path: Path, slope: float, intercept: float, xy_spacing: float, z_spacing: float) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    nib: Any = importlib.import_module("nibabel")
    img_data = nib.load(str(path)).get_fdata()
    img_data = slope * img_data + intercept
    img_data = np.clip(img_data, -1000, 1000)
    img_data = img_data.transpose(2, 0, 1)
    tensor = torch.tensor(img_data).unsqueeze(0).unsqueeze(0)
    current = (z_spacing, xy_spacing, xy_spacing)
    target = (1.5, 0.75, 0.75)
    original_shape = tensor.shape[2:]
    new_shape = [int(original_shape[i] * current[i] / target[i]) for i in range(3)]
    resized = F.interpolate(tensor, size=new_shape, mode="trilinear", align_corners=False).cpu().numpy()
    img_data = np.transpose(resized[0][0], (1, 2, 0))
    img_data = (img_data / 1000).astype(np.float32)
    tensor = torch.tensor(img_data)
    h, w, d = tensor.shape
    dh, dw, dd = 480, 480, 240
    h_start, w_start, d_start = max((h - dh) // 2, 0), max((w - dw) // 2, 0), max((d - dd) // 2, 0)
    tensor = tensor[h_start : min(h_start + dh, h), w_start : min(w_start + dw, w), d_start : min(d_start + dd, d)]
    pad_h_before = (dh - tensor.size(0)) // 2
    pad_h_after = dh - tensor.size(0) - pad_h_before
    pad_w_before = (dw - tensor.size(1)) // 2
    pad_w_after = dw - tensor.size(1) - pad_w_before
    pad_d_before = (dd - tensor.size(2)) // 2
    pad_d_after = dd - tensor.size(2) - pad_d_before
    tensor = F.pad(tensor, (pad_d_before, pad_d_after, pad_w_before, pad_w_after, pad_h_before, pad_h_after), value=-1)
    return tensor.permute(2, 0, 1).numpy()


def resize_image_itk(itkimage: Any, new_size: tuple[int, int, int]) -> Any:
    sitk: Any = importlib.import_module("SimpleITK")
    resampler: Any = sitk.ResampleImageFilter()
    origin_size = np.array(itkimage.GetSize(), float)
    origin_spacing = np.array(itkimage.GetSpacing(), float)
    size = np.array(new_size, float)
    factor = origin_size / size
    new_spacing = origin_spacing * factor
    resampler.SetReferenceImage(itkimage)
    resampler.SetSize(size.astype(int).tolist())
    resampler.SetOutputSpacing(new_spacing.tolist())
    resampler.SetTransform(sitk.Transform(3, sitk.sitkIdentity))
    resampler.SetInterpolator(sitk.sitkLinear)
    return resampler.Execute(itkimage)


def m3d_reference(path: Path) -> np.ndarray:
    sitk: Any = importlib.import_module("SimpleITK")
    image = sitk.ReadImage(str(path))
    resized = resize_image_itk(image, (256, 256, 32))
    array: np.ndarray = sitk.GetArrayFromImage(resized).astype(np.float32)
    array = (array - array.min()) / (array.max() - array.min())
    return np.asarray(array[np.newaxis], dtype=np.float32)
