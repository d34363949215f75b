"""Compression in torch before export: pruning, distillation, QAT (planned; see the README roadmap).

Post-training quantization is not here: it belongs to each format's own tool (see ``edgepipe.export``).
"""
