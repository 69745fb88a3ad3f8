"""The models: pretrained backbones and their runtime, the one pixel pipeline (ROI crop, input
shape, test-time augmentation), the kinds of tool, training, inference, explanations, validation
figures and tool files. The only layer that imports torch."""
