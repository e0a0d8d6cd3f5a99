"""The release: the 3D-RAD file layout, train fractions, and the Hugging Face Hub export."""
