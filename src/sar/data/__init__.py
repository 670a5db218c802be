"""Data: keypoint specs, format readers, sample builders, transforms and datamodules."""
