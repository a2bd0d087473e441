"""Fine-tuning and evaluation. config (every option, defined once), inputs (data and loaders),
trainable (model, optimiser, precision, EMA), engine (the one optimisation step/epoch), features
(the cached head stage), history (epochs, best, early stopping, results), checkpoint (what a run
folder holds, from the training side), session (one run, composed of those), loop (train and
resume), signals (Ctrl-C and SIGTERM), distributed, lrfind, evaluate. Torch is imported inside
functions, so importing the package stays cheap."""
