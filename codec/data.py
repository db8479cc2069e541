"""Training and validation data: a compact bank of pre-cut crops.

Decoding PNGs on every step would cost more than the model on 2 cores, so
`build_crop_bank` cuts each training photo once into a few square crops and
stores them as one uint8 array. `CropSampler` then draws random sub-crops with
random flips from that array in memory.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(directory: Path) -> list[Path]:
    paths = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images in {directory}")
    return paths


def build_crop_bank(
    directory: Path, output: Path, crop_size: int = 256, crops_per_image: int = 4, seed: int = 0
) -> np.ndarray:
    """Cut `crops_per_image` random crops from every image and save them.

    Images smaller than `crop_size` on a side are skipped. The bank is written
    with `np.save`, so it can be memory-mapped and carried to another machine.
    """
    rng = np.random.default_rng(seed)
    crops: list[np.ndarray] = []
    for path in tqdm(list_images(directory), desc="cutting crops", unit="img"):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        height, width, _ = pixels.shape
        if height < crop_size or width < crop_size:
            continue
        for _ in range(crops_per_image):
            top = rng.integers(0, height - crop_size + 1)
            left = rng.integers(0, width - crop_size + 1)
            crops.append(pixels[top : top + crop_size, left : left + crop_size])
    bank = np.stack(crops)
    save_crop_bank(bank, output)
    return bank


def save_crop_bank(bank: np.ndarray, path: Path) -> None:
    """`.npy`: raw uint8, memory-mappable. `.npz`: every crop as PNG, about half
    the size, for carrying the bank to a GPU machine under a transfer cap."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".npz":
        np.save(path, bank)
        return
    encoded = []
    for crop in bank:
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, format="PNG", optimize=True)
        encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    offsets = np.cumsum([0] + [len(e) for e in encoded])
    np.savez(path, png=np.concatenate(encoded), offsets=offsets)


def load_crop_bank(path: Path) -> np.ndarray:
    """A bank written by `save_crop_bank`, as an (N, H, W, 3) uint8 array."""
    if path.suffix != ".npz":
        return np.load(path, mmap_mode="r")
    with np.load(path) as archive:
        blob, offsets = archive["png"], archive["offsets"]
    spans = zip(offsets, offsets[1:])
    return np.stack([np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB")) for a, b in spans])


class CropSampler:
    """Random sub-crops with random horizontal and vertical flips."""

    def __init__(self, bank: np.ndarray, crop_size: int, seed: int = 0) -> None:
        if bank.ndim != 4 or bank.shape[-1] != 3:
            raise ValueError("a crop bank is an array of shape (N, H, W, 3)")
        if crop_size > min(bank.shape[1:3]):
            raise ValueError(f"crop size {crop_size} exceeds the bank's crops {bank.shape[1:3]}")
        self.bank = bank
        self.crop_size = crop_size
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        """A float batch in [0, 1], shape (size, 3, crop, crop)."""
        n, height, width, _ = self.bank.shape
        c = self.crop_size
        out = np.empty((size, c, c, 3), dtype=np.uint8)
        for i in range(size):
            crop = self.bank[self.rng.integers(n)]
            top = self.rng.integers(0, height - c + 1)
            left = self.rng.integers(0, width - c + 1)
            crop = crop[top : top + c, left : left + c]
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            if self.rng.random() < 0.5:
                crop = crop[::-1]
            out[i] = crop
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def center_crops(paths: list[Path], size: int) -> torch.Tensor:
    """A fixed validation batch: the centre `size` square of each image."""
    crops = []
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        height, width, _ = pixels.shape
        top, left = (height - size) // 2, (width - size) // 2
        crops.append(pixels[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
