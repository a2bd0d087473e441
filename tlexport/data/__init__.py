"""Images on disk -> samples and tensors: decoding (images), the one preprocessing definition
(preprocess), labelled folders (folders), the training Dataset (dataset) and generated data
(synth). Torch-free, except `dataset`, which is only imported where torch is in use."""
