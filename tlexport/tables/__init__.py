"""The tables every other layer reads: architectures (archs), artifact formats and manifests
(artifacts), and the metadata embedded in every artifact (metadata). Torch-free to import."""
