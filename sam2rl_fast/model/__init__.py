"""Model building blocks beyond sam2's own modules (the image-encoder trunk of the bundled model)."""
