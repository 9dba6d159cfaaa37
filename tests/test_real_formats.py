"""What real files of the on-disk formats hold that the synthetic fixtures do not."""
from __future__ import annotations

import json

import cv2
import numpy as np
import torch

from runner.data.formats.folder_json import FolderJsonDataset, Layout
from runner.data.formats.occ3d import OCC3D_FREE_CLASS, Occ3DDataset
from runner.data.synthetic.occupancy import OccupancySpec

LAYOUT = Layout(images=("image",), targets={"xy": ("float", (2,))})


def test_folder_json_reads_images_and_samples_as_users_have_them(tmp_path):
    """Grayscale, RGBA, 16-bit PNG and JPEG images, images in a subfolder, extra keys in a sample, and a
    macOS `._` resource fork beside a sample file."""
    split = tmp_path / "train"
    (split / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {"gray.png": rng.integers(0, 256, (12, 16), dtype=np.uint8),
              "rgba.png": rng.integers(0, 256, (12, 16, 4), dtype=np.uint8),
              "deep.png": rng.integers(0, 65536, (12, 16, 3), dtype=np.uint16),
              "photo.jpg": rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)}
    for i, (name, img) in enumerate(images.items()):
        assert cv2.imwrite(str(split / "imgs" / name), img)
        (split / f"{i:06d}.json").write_text(json.dumps({"image": f"imgs/{name}", "xy": [0.5, 0.25],
                                                         "id": f"cam0/{name}", "source": "labelled by hand"}))
    (split / "._000000.json").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    ds = FolderJsonDataset(split, LAYOUT, sizes={"image": (16, 12)})
    assert len(ds) == 4
    for i in range(4):
        s = ds[i]
        assert s["image"].shape == (3, 12, 16) and s["image"].dtype == torch.float32
        assert 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
        assert s["xy"].tolist() == [0.5, 0.25]
    gray = ds[list(images).index("gray.png")]["image"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    deep = ds[list(images).index("deep.png")]["image"]
    assert float(deep.std()) > 0.1  # 16-bit values scaled to 8 bits, not clipped to white


def test_occ3d_reads_a_real_nuscenes_layout(tmp_path):
    """Occ3D-nuScenes as shipped: gts/<scene>/<token>/labels.npz with uint8 semantics 0-17 (17 free),
    uint8 mask_lidar and mask_camera, and an annotations.json beside gts/."""
    grid = (8, 8, 4)
    rng = np.random.default_rng(1)
    (tmp_path / "annotations.json").write_text("{}")
    expected = []
    for k, token in enumerate(["e3d495d4ac534d54b321f50006683844", "fd8420396768425eabec9bdddf7e64b6"]):
        d = tmp_path / "gts" / f"scene-000{k}" / token
        d.mkdir(parents=True)
        sem = np.where(rng.random(grid) < 0.1, rng.integers(0, 17, grid), OCC3D_FREE_CLASS).astype(np.uint8)
        cam = (rng.random(grid) < 0.7).astype(np.uint8)
        lidar = (rng.random(grid) < 0.5).astype(np.uint8)
        np.savez_compressed(d / "labels.npz", semantics=sem, mask_lidar=lidar, mask_camera=cam)
        expected.append((sem != OCC3D_FREE_CLASS) & cam.astype(bool))
    ds = Occ3DDataset(tmp_path / "gts", "train", OccupancySpec(grid=grid))
    assert len(ds) == 2
    for i, occ in enumerate(expected):
        assert np.array_equal(ds[i]["occupancy"].numpy().astype(bool), occ)  # class 0 ("others") is occupied
    no_mask = Occ3DDataset(tmp_path / "gts", "train", OccupancySpec(grid=grid), use_camera_mask=False)
    assert int(no_mask.occupied.sum()) > int(ds.occupied.sum())
