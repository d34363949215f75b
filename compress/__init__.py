"""Compression in torch, before export: structured pruning (``prune``), unstructured pruning
(``sparsify``), knowledge distillation (``distill``) and quantization-aware training (``qat``).

Each is a torch-side stage (registered in ``edgepipe.stage.STAGES``): its config class validates without
torch, its verb takes the parent torch artifact and writes a new one whose module spec records any
tensors it resized, so the compressed model reloads exactly. Post-training quantization is not here: it
belongs to each format's own tool (``edgepipe.export``), and runs on the compressed model like any other.
"""
