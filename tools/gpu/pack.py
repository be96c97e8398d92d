"""Pack the train split of the training data sets into one folder that travels to a lent GPU machine.

The machine gets the repository and the folders named in the call, 64 MiB in all, and lacks SimpleITK, MONAI
and diffusers; SimpleITK's wheel alone is 53 MB. So the train cases of each data set are written as a
``packed`` data set (xz-compressed arrays, read without SimpleITK; see ScarEnhanceLib/datasets.py) with a
splits file naming them, and ``make gpu-pack`` adds the MONAI and diffusers wheels. tools/gpu/train.sh runs there.

    python tools/gpu/pack.py ../shared/data gpu_pack
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ScarEnhanceLib.datasets import DatasetSpec, load_cases, write_packed  # noqa: E402
from ScarEnhanceLib.splits import SPLITS_FILE, load_splits  # noqa: E402

DATASETS = ("emidec", "myops2020_train25", "mscmrseg19_lge")


def pack(data_root: Path, output: Path, splits: dict, datasets=DATASETS) -> dict[str, int]:
    """Write ``output``/data/NAME (the train split of each data set) and ``output``/splits.json (those cases as
    the train split; validation and test stay behind). Returns the bytes written per data set."""
    packed_splits, sizes = {}, {}
    for name in datasets:
        spec = DatasetSpec.load(data_root / name)
        train = splits[name]["train"]
        cases = load_cases(spec, train, keep_mvo=True)  # no-reflow stays apart for `--mvo-class` training
        folder = write_packed(cases, sorted(set(spec.label_map.values())), output / "data" / name)
        packed_splits[name] = {"train": list(train), "val": [], "test": []}
        sizes[name] = sum(f.stat().st_size for f in folder.iterdir())
    packed_splits["note"] = "the train splits of Resources/splits.json, packed by tools/gpu/pack.py"
    (output / "splits.json").write_text(json.dumps(packed_splits, indent=1) + "\n", encoding="utf-8")
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", type=Path, help="folder holding " + ", ".join(DATASETS))
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    sizes = pack(args.data_root, args.output, load_splits(SPLITS_FILE))
    for name, size in sizes.items():
        print(f"{name}: {size / 2**20:.1f} MiB")
    print(f"{args.output}: {sum(sizes.values()) / 2**20:.1f} MiB of data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
