"""ANN test accuracy of a checkpoint written by ``bioconv train``.

The dataset and preprocessing are taken from the checkpoint's metadata.

example:
  bioconv evaluate runs/ann/cnn7-mnist.pt
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="checkpoint file (.pt) written by `bioconv train`")
    parser.add_argument("--split", default="test", choices=["test", "train"], help="dataset split (default test)")
    parser.add_argument("--max-images", type=int, metavar="N", help="only the first N images of the split")
    parser.add_argument("--data-dir", help="dataset folder (default: $BIOCONV_DATA_DIR, then ~/.cache/bioconv)")
    parser.add_argument("--batch-size", type=int, default=1000, help="images per forward pass (default 1000)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from bioconv.ann import evaluate, load_checkpoint
    from bioconv.data import load_dataset, subset

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 image, got {args.batch_size}")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
    model, meta = load_checkpoint(args.ckpt)  # refuses NaN/Inf weights
    ds = subset(load_dataset(meta["dataset"], args.split, args.data_dir), args.max_images)
    if ds.input_shape != tuple(meta["input_shape"]):
        raise ValueError(f"dataset input {ds.input_shape} != checkpoint input {tuple(meta['input_shape'])}")
    acc = evaluate(model, ds, batch_size=args.batch_size, device=args.device)
    stored = meta.get("test_accuracy")
    full = args.split == "test" and args.max_images is None
    note = f" (stored at training: {100 * stored:.2f} %)" if stored is not None and full else ""
    print(f"{args.ckpt}: {meta['arch']} ({meta['spec']}) on {meta['dataset']} {args.split}, {len(ds)} images: "
          f"accuracy {100 * acc:.2f} %{note}")
    return 0
