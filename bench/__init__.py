"""Benchmarks of the pipeline against the reference method and against the hardware.

    python -m bench [--quick] [--corpus FILE] [--model M] [--json FILE]   # CPU, side by side
    python -m bench gpu [--quick] [--json FILE]                           # bert-base on a GPU
"""
