"""Two finished attack folders on the same images (e.g. AutoAttack per eps and the fast worst case's
``cascade/``): robust images per eps, the per-image verdict agreement, and the forward+backward passes per
image of each (their ``attack.json`` cost, with the images it covers).

    python benchmarks/agreement.py RUN/aa-128 RUN/fast-128/cascade

An image is robust at an eps when it is clean-correct and its adversarial prediction is its label. Exit 2 when
the folders do not hold the same images and eps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(folder: Path) -> tuple[dict[int, dict], dict]:
    records = {r["index"]: r for r in map(json.loads, (folder / "records.jsonl").read_text().splitlines())}
    return records, json.loads((folder / "attack.json").read_text())


def compare(ref_dir: Path, other_dir: Path) -> dict:
    ref, ref_json = load(ref_dir)
    other, other_json = load(other_dir)
    if ref.keys() != other.keys() or [r["path"] for r in ref.values()] != [other[i]["path"] for i in ref]:
        raise SystemExit(f"error: {ref_dir} and {other_dir} hold different images")
    eps = [a["eps"] for a in next(iter(ref.values()))["adv"]]
    if eps != [a["eps"] for a in next(iter(other.values()))["adv"]]:
        raise SystemExit(f"error: {ref_dir} and {other_dir} attack different eps")

    def robust(r: dict, j: int) -> bool:
        return r["clean_pred"] == r["label"] and r["adv"][j]["pred"] == r["label"]

    rows = [{"eps": e, "robust_reference": sum(robust(r, j) for r in ref.values()),
             "robust_other": sum(robust(other[i], j) for i in ref),
             "agreement": sum(robust(r, j) == robust(other[i], j) for i, r in ref.items()) / len(ref)}
            for j, e in enumerate(eps)]
    cost = {name: {k: d["cost"].get(k) for k in ("forward_backward_passes_per_image", "resumed_images",
                                                 "images_costed", "passes_per_image_by_attack")}
            for name, d in (("reference", ref_json), ("other", other_json))}
    return {"images": len(ref), "clean_correct": sum(r["clean_pred"] == r["label"] for r in ref.values()),
            "eps": rows, "cost": cost}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python benchmarks/agreement.py REFERENCE_FOLDER OTHER_FOLDER", file=sys.stderr)
        return 2
    result = compare(Path(argv[0]), Path(argv[1]))
    print(f"{result['images']} images, {result['clean_correct']} clean-correct")
    print("| eps | robust (reference) | robust (other) | per-image agreement |")
    print("| --- | --- | --- | --- |")
    for r in result["eps"]:
        print(f"| {r['eps']:g} | {r['robust_reference']} | {r['robust_other']} | {r['agreement']:.1%} |")
    print(json.dumps(result["cost"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
