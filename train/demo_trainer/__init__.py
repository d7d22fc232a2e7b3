"""Training of sam2rl-fast's bundled model (kept outside the package, as sam2 keeps its
`training/`): data and memory schedules (`data`), SAM 2's training forward over the memory
sets policies leave (`forward`), SAM 2.1's losses (`losses`), the resumable run (`run`).
The entry point is `train/train_demo_model.py`; the model card is docs/demo-model.md."""
