"""Turn a training checkpoint into a small serving file (weights, centers, metadata).

    python -m fer.export runs/<run>/checkpoint_best.pt fer/weights/fer_default.safetensors

The result loads with :func:`fer.checkpoint.load_model` and is what the app and
``python -m fer.predict`` use by default when written to
:data:`fer.checkpoint.DEFAULT_MODEL_PATH`.
"""

from __future__ import annotations

import argparse
import sys

from fer.checkpoint import DEFAULT_MODEL_PATH, export_safetensors, load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a .pt checkpoint written by train.py")
    parser.add_argument("out", nargs="?", default=str(DEFAULT_MODEL_PATH),
                        help="destination .safetensors (default: the bundled model's path)")
    parser.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    args = parser.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        parser.error("the output must be a .safetensors file")
    out = export_safetensors(args.checkpoint, args.out, half=args.half)
    _, meta = load_model(out)  # prove it loads before anyone relies on it
    size_mb = out.stat().st_size / 2**20
    print(f"wrote {out} ({size_mb:.1f} MB): {meta['model_name']}, classes {meta['classes']}, "
          f"input {meta['data_config'].input_size}px x{meta['data_config'].in_chans}, epoch {meta.get('epoch')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
