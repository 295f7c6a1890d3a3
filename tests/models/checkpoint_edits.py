"""Editing a checkpoint's tensors in place, for the tests that break checkpoints on purpose."""

import numpy as np

from host.checkpoint import SafetensorsFile, bf16_to_float32, write_safetensors


def rewrite(folder, change):
    """Apply ``change(tensors, dtypes)`` to a checkpoint's tensors and write them back."""
    path = folder / "model.safetensors"
    st = SafetensorsFile(path)
    tensors = {k: st.read(k, raw_bf16=True) for k in st.keys()}
    dtypes = {k: t.dtype for k, t in st.tensors.items()}
    change(tensors, dtypes)
    tensors = {k: (bf16_to_float32(v) if dtypes.get(k) == "BF16" and v.dtype == np.uint16
                   else v) for k, v in tensors.items()}
    write_safetensors(path, tensors, dtypes={k: d for k, d in dtypes.items() if k in tensors})
