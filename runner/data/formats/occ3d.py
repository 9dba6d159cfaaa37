"""Occ3D-style occupancy labels: a tree of sample directories, each holding `labels.npz`.

Layout (Occ3D-nuScenes `gts/<scene>/<sample token>/labels.npz`; any depth works):

    ROOT/
      scene-0001/
        0a1b.../labels.npz      semantics   uint8 [X, Y, Z]  class id per voxel; free_class = empty
        0c2d.../labels.npz      mask_camera uint8/bool [X, Y, Z]  1 = voxel seen by a camera
      scene-0002/ ...

A sample directory is any directory under ROOT with no subdirectories; each must hold a
`labels.npz`. Occupancy = (semantics != free_class) & (mask_camera if use_camera_mask). Other
keys (`mask_lidar`, ...) are ignored.

Every file is opened once when the dataset is built, so a missing, corrupt or malformed file
stops the run before training with one line naming it (UserError). A sample with no occupied
voxel is legal (seed 004's UAVScenes notes: most samples came out empty); such samples are
counted and announced in one warning, and only a dataset in which every sample is empty is
an error.
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from runner.errors import UserError

LABELS = "labels.npz"
OCC3D_FREE_CLASS = 17  # Occ3D-nuScenes: 0-16 objects and surfaces, 17 free


def sample_dirs(root: str | Path) -> list[Path]:
    """Leaf directories under root, sorted (the samples)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"Occ3D data directory {str(root)!r} does not exist")
    leaves = sorted(d for d in [root, *root.rglob("*")] if d.is_dir() and not any(c.is_dir() for c in d.iterdir()))
    if leaves == [root] and not (root / LABELS).exists():
        raise UserError(f"Occ3D data directory {str(root)!r} holds no sample directories with {LABELS}")
    return leaves


def read_labels(path: str | Path, free_class: int = OCC3D_FREE_CLASS, use_camera_mask: bool = True,
                grid: tuple[int, int, int] | None = None) -> np.ndarray:
    """One labels.npz -> occupancy bool [X, Y, Z]; any defect is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing Occ3D labels file {str(path)!r}")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise UserError(f"Occ3D labels file {str(path)!r} is a single array, not an .npz archive with "
                            "'semantics' and 'mask_camera'")
        with npz:
            keys = set(npz.files)
            need = ["semantics"] + (["mask_camera"] if use_camera_mask else [])
            missing = [k for k in need if k not in keys]
            if missing:
                raise UserError(f"Occ3D labels file {str(path)!r} lacks key(s) {missing}; it has {sorted(keys)}"
                                + ("; set data.use_camera_mask=false to train without the camera mask"
                                   if missing == ["mask_camera"] else ""))
            sem = npz["semantics"]
            mask = npz["mask_camera"] if use_camera_mask else None
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"Occ3D labels file {str(path)!r} is not a readable .npz: {type(e).__name__}: {e}") from None
    if sem.ndim != 3 or not np.issubdtype(sem.dtype, np.integer):
        raise UserError(f"Occ3D labels file {str(path)!r}: 'semantics' must be an integer [X, Y, Z] array, "
                        f"got {sem.dtype} {list(sem.shape)}")
    if grid is not None and tuple(sem.shape) != tuple(grid):
        raise UserError(f"Occ3D labels file {str(path)!r}: grid {list(sem.shape)} differs from data.grid "
                        f"{list(grid)}; set data.grid={list(sem.shape)}")
    occ = sem != free_class
    if mask is not None:
        if mask.shape != sem.shape:
            raise UserError(f"Occ3D labels file {str(path)!r}: 'mask_camera' shape {list(mask.shape)} differs "
                            f"from 'semantics' {list(sem.shape)}")
        occ &= mask.astype(bool)
    return occ


def write_labels(path: str | Path, semantics: np.ndarray, mask_camera: np.ndarray | None = None) -> Path:
    """Write one labels.npz (compressed, as Occ3D ships them); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask_camera is None:
        mask_camera = np.ones(semantics.shape, dtype=np.uint8)
    np.savez_compressed(path, semantics=semantics.astype(np.uint8), mask_camera=mask_camera.astype(np.uint8))
    return path


def export_synthetic(dataset, root: str | Path, n: int | None = None, free_class: int = OCC3D_FREE_CLASS,
                     scenes: int = 2) -> list[Path]:
    """Write the first n grids of a synthetic OccupancyDataset in the Occ3D layout.

    Occupied voxels get class ids 1..16 by height band (any non-free id works), free voxels
    `free_class`; mask_camera is all ones. Samples are split into `scenes` scene directories in
    order, so the sorted sample directories list them in index order.
    """
    root = Path(root)
    n = len(dataset) if n is None else n
    per_scene = -(-n // max(1, scenes))
    paths = []
    for i in range(n):
        occ = dataset.grid(i)
        band = 1 + (np.arange(occ.shape[2]) * 16 // occ.shape[2])
        sem = np.where(occ, band[None, None, :], free_class).astype(np.uint8)
        paths.append(write_labels(root / f"scene-{i // per_scene:04d}" / f"sample-{i:06d}" / LABELS, sem))
    return paths


class Occ3DDataset(torch.utils.data.Dataset):
    """Occ3D labels as training samples {"bev", "occupancy"}.

    The network input is simulated from the labels with the same bird's-eye sensor model as the
    synthetic data (runner.data.synthetic.occupancy.observe): the labels carry no sensor data.
    """

    def __init__(self, root: str | Path, split: str, spec, free_class: int = OCC3D_FREE_CLASS,
                 use_camera_mask: bool = True):
        self.root, self.split, self.spec = Path(root), split, spec
        self.free_class, self.use_camera_mask = free_class, use_camera_mask
        dirs = sample_dirs(root)
        self.files = [d / LABELS for d in dirs]
        counts = [int(self.read(i).sum()) for i in range(len(self.files))]  # validates every file
        self.occupied = np.array(counts, dtype=np.int64)
        self.empty = [str(f) for f, c in zip(self.files, counts) if c == 0]
        if len(self.empty) == len(self.files):
            raise UserError(f"every one of the {len(self.files)} Occ3D samples under {str(root)!r} is empty "
                            f"(no voxel with a class other than {free_class}"
                            + (" inside mask_camera" if use_camera_mask else "") + "); check data.free_class "
                            "and data.use_camera_mask, or the voxelization (seed 004: pose-only alignment "
                            "left UAVScenes grids empty)")
        if self.empty:
            warnings.warn(f"{len(self.empty)} of {len(self.files)} Occ3D samples under {str(root)!r} have no "
                          f"occupied voxel (first: {self.empty[0]}); they train the model to predict nothing",
                          stacklevel=2)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray:
        return read_labels(self.files[index], self.free_class, self.use_camera_mask, self.spec.grid)

    grid = read

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from runner.data.synthetic.occupancy import observe

        if not 0 <= index < len(self.files):
            raise IndexError(index)
        occ = self.read(index)
        return {"bev": torch.from_numpy(observe(occ, self.spec, self.split, index)),
                "occupancy": torch.from_numpy(occ.view(np.uint8))}

    def statistics(self, samples: int | None = None) -> dict[str, float]:
        return {"samples": len(self.files),
                "occupancy_rate": float(self.occupied.sum() / (len(self.files) * np.prod(self.spec.grid))),
                "empty_fraction": len(self.empty) / len(self.files)}
