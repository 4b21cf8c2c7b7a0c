"""Data-loading throughput: CamVid decoding + training transforms at 360x480, and ToyScenes generation.

    python bench/data.py [--images 192] [--batch 8] [--threads N]

For each pipeline, a DataLoader with 0 and with 2 worker processes runs over `--images` images
(after one warm-up batch that also starts the workers) and reports images per second. A second
table times the steps of one CamVid training sample in the main process, including the hue jitter
the training transform leaves out. Worker processes run with one intra-op thread each (PyTorch's
default in DataLoader workers); `--threads` sets the main process's. Needs CamVid in data/camvid or
../shared/data/camvid.
"""
import argparse
import time

import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from contextrast.core import dataset_root
from contextrast.data import CamVid, RandomScale, read_image, read_label, train_transform
from contextrast.toys import ToyScenes


def throughput(ds, workers: int, images: int, batch: int) -> float:
    "Images per second drawn from `ds` through a DataLoader with `workers` processes."
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)
    seen, t0 = 0, time.perf_counter()
    while seen < images:
        try: x, _ = next(it)
        except StopIteration:
            it = iter(loader); x, _ = next(it)
        seen += len(x)
    return seen / (time.perf_counter() - t0)


def per_step_ms(ds, n: int = 40) -> dict:
    "Mean milliseconds of each step of one training sample, in this process."
    steps = {"decode image (PNG)": 0.0, "decode labels (PNG) + map": 0.0, "random scale [0.5, 2]": 0.0,
             "crop 360x480 + flip": 0.0, "colour jitter (b, c, s)": 0.0, "hue jitter (not used)": 0.0,
             "to float + normalise": 0.0}
    crop = v2.Compose([v2.RandomCrop((360, 480), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
                       v2.RandomHorizontalFlip()])
    jitter, hue = v2.ColorJitter(0.25, 0.25, 0.25), v2.ColorJitter(hue=0.05)
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    for i in range(n):
        image_path, label_path = ds.files[i]
        t = time.perf_counter(); image = read_image(image_path); steps["decode image (PNG)"] += time.perf_counter() - t
        t = time.perf_counter(); ds.lut[read_label(label_path)]; steps["decode labels (PNG) + map"] += time.perf_counter() - t
        x, y = tv_tensors.Image(image), tv_tensors.Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
        t = time.perf_counter(); x, y = RandomScale()(x, y); steps["random scale [0.5, 2]"] += time.perf_counter() - t
        t = time.perf_counter(); x, y = crop(x, y); steps["crop 360x480 + flip"] += time.perf_counter() - t
        t = time.perf_counter(); jitter(x); steps["colour jitter (b, c, s)"] += time.perf_counter() - t
        t = time.perf_counter(); hue(x); steps["hue jitter (not used)"] += time.perf_counter() - t
        t = time.perf_counter(); norm(x); steps["to float + normalise"] += time.perf_counter() - t
    return {k: 1000 * v / n for k, v in steps.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of the main process (0: PyTorch's default)")
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = dataset_root("camvid")
    if root is None: raise SystemExit("CamVid not found in data/camvid or ../shared/data/camvid")
    pipelines = {
        "CamVid decode only (360x480)": CamVid(root, "train"),
        "CamVid decode + train_transform(360x480)": CamVid(root, "train", transform=train_transform((360, 480))),
        "ToyScenes 96x128 (no transform)": ToyScenes(2000, (96, 128), seed=0),
        "ToyScenes 360x480 (no transform)": ToyScenes(2000, (360, 480), seed=0),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads in the main process, "
          f"{args.images} images per measurement, batch {args.batch}\n")
    print(f"| pipeline | 0 workers (img/s) | 2 workers (img/s) |\n|---|---|---|")
    for name, ds in pipelines.items():
        r0, r2 = (throughput(ds, w, args.images, args.batch) for w in (0, 2))
        print(f"| {name} | {r0:.1f} | {r2:.1f} |", flush=True)
    print(f"\n| step of one CamVid training sample (main process) | ms |\n|---|---|")
    for k, v in per_step_ms(pipelines["CamVid decode only (360x480)"]).items():
        print(f"| {k} | {v:.2f} |")


if __name__ == "__main__":
    main()
