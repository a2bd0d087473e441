"""Fine-tuning and evaluation: config, schedule (torch LR schedulers), checkpoint, the loop, and
evaluate. Torch is imported inside functions, so importing the package stays cheap."""
