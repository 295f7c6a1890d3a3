"""Train the bundled BitNet b1.58 model: ``python -m train --out models/tiny``.

Quantization-aware training as in the BitNet b1.58 paper: every projection's forward pass uses
absmean-ternarized weights and absmax int8 activations, and gradients pass through the rounding
unchanged (straight-through estimator). The result is exported in the Hugging Face packed
checkpoint format that :func:`host.checkpoint.load_checkpoint` reads, with a byte-level BPE
``tokenizer.json`` trained on the same text.

* :mod:`train.corpus`: the training text (ships with CPython, no network) and the tokenizer.
* :mod:`train.bitnet`: the model in PyTorch, ternary or float, and its export.
* :mod:`train.__main__`: the command line, the training loop and the report.

Needs the ``train`` extra (``pip install -e '.[train]'``: a CPU build of PyTorch).
"""
