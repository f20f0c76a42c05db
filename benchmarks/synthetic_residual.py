"""What the detail stage cannot explain: its data term's residual on renders of one synthetic head
with parts of the image left out (``scripts/make_synthetic_faces.py --off``).

    for off in "" displacement "displacement shadows" "displacement specular" "displacement marks" \\
               "displacement occlusion specular marks"; do
        python scripts/make_synthetic_faces.py --only neutral_front --size 384 --samples 16 \\
            --output "out/variants/$(echo ${off:-full} | tr ' ' _)" ${off:+--off $off}
    done
    python benchmarks/synthetic_residual.py --variants out/variants --head neutral_front

``full`` (nothing left out) is fitted by ``quality`` once; the detail stage is then set up on the
true shape, pose and camera (the ``oracle_geometry`` run of benchmarks/synthetic_detail.py) with
each variant as the photo. Per variant: the target the stage fits (high-passed log-luminance)
minus what its shading model predicts for the face *without* displacement, as an rms relative to
the folds' own signal (target of ``full`` minus target of ``displacement``); on the stage's pixel
weights for ``full`` and on all its data pixels. A variant ``<name>_s<N>`` is the same render with
N samples: its difference to ``<name>`` is the renderer's noise.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.synthetic_detail import load_truth, oracle_rec  # noqa: E402
from core.displacement import detail as D  # noqa: E402
from core.fitting.losses import masked_mean  # noqa: E402
from core.image_io import load_image  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402


def target_and_residual(rec, photo, settings) -> tuple[torch.Tensor, torch.Tensor, D.DetailView]:
    """The stage's shading target for ``photo`` and its residual against the undisplaced face."""
    view = D.DetailObjective(replace(rec, image=photo), settings, None, torch.device("cpu")).views[0]
    zero = torch.zeros(len(view.scene.positions))
    predicted = view.band.high(view.log_shading(view.scene.render(zero).normals))
    return view.shading_target, view.shading_target - predicted, view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=Path, required=True, help="folder of variant sets (full, ...)")
    parser.add_argument("--head", default="neutral_front")
    args = parser.parse_args()
    torch.set_num_threads(1)
    truth = load_truth(args.variants / "full" / args.head)
    fitted = Pipeline().run(truth.photo, preset_settings("quality", detail=False, device="cpu"))
    rec = oracle_rec(fitted, truth, False)
    settings = replace(D.DetailSettings.from_pipeline(preset_settings("quality", device="cpu")),
                       guidance="photometric")
    names = sorted(p.parent.parent.name for p in args.variants.glob(f"*/{args.head}/photo.png"))
    targets, residuals = {}, {}
    for name in names:
        photo = load_image(args.variants / name / args.head / "photo.png").rgb
        targets[name], residuals[name], view = target_and_residual(rec, photo, settings)
        if name == "full":
            weights, mask = view.shading_weight, view.data_mask[None, None].float()
    fold = targets["full"] - targets["displacement"]

    def ratio(x: torch.Tensor, w: torch.Tensor) -> float:
        return float(masked_mean(x.square(), w) / masked_mean(fold.square(), w)) ** 0.5

    signal = float(masked_mean(fold.square(), weights)) ** 0.5
    print(f"{args.head}: folds' signal rms {signal:.4f} (log units)")
    print("| photo (parts left out) | residual / folds, stage weights | residual / folds, all data pixels |")
    print("|---|---|---|")
    for name in names:
        if name != "full":
            print(f"| {name} | {ratio(residuals[name], weights):.2f} | {ratio(residuals[name], mask):.2f} |")
    for name in names:
        base, _, samples = name.rpartition("_s")
        if samples.isdigit() and base in targets:
            noise = targets[base] - targets[name]
            print(f"| noise: {base} minus {name} | {ratio(noise, weights):.2f} | {ratio(noise, mask):.2f} |")


if __name__ == "__main__":
    main()
