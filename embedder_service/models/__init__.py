"""Model tooling: the bundle format (all the serving path imports), hub download, export, quantization, the CLI.

Only bundle.py is light; the others pull onnx (and export torch), so nothing here imports them eagerly.
"""
