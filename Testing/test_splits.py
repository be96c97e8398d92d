"""Patient-level splits on made-up folders (the real data's are checked in test_real_data.py)."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from ScarEnhanceLib.splits import build_splits, main, make_patient_split

PATIENTS = [str(n) for n in range(1, 21)]


def test_patient_split_is_disjoint_complete_and_sized():
    split = make_patient_split(PATIENTS, seed=3, test_fraction=0.2, val_fraction=0.1)
    parts = [set(split[p]) for p in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(PATIENTS) and set().union(*parts) == set(PATIENTS)
    assert (len(split["test"]), len(split["val"])) == (4, 2)


def test_patients_held_out_before_stay_held_out():
    held_out = {"test": ["7", "99"], "val": ["3"]}  # 99 is gone from the data: dropped
    split = make_patient_split(PATIENTS, seed=0, test_fraction=0.2, val_fraction=0.1, held_out=held_out)
    assert "7" in split["test"] and "3" in split["val"] and "99" not in sum(split.values(), [])
    assert (len(split["test"]), len(split["val"])) == (4, 2)


def _volume(path, values):
    sitk.WriteImage(sitk.GetImageFromArray(np.asarray(values, dtype=np.int16)), str(path))


def _fake_data(root):
    emidec = root / "emidec"
    for folder in ("train", "trainannot"):
        (emidec / folder).mkdir(parents=True)
        for case in ("Case_N001", "Case_N002", "Case_P001", "Case_P002"):
            Image.fromarray(np.full((8, 8), 1, np.uint8)).save(emidec / folder / f"{case}_slice001.png")
    (root / "mscmrseg19_lge").mkdir()
    (root / "myops2020_train25").mkdir()
    rows = ["myops_case,mscmrseg_patient,mscmrseg_slice_of_each_myops_slice"]
    for patient in range(1, 11):
        for folder, name in (("mscmrseg19_lge", f"patient{patient}_LGE"), ("myops2020_train25", f"Case{3000 + patient}_LGE")):
            _volume(root / folder / f"{name}.nii.gz", np.zeros((2, 8, 8)))
            _volume(root / folder / f"{name}_manual.nii.gz", np.full((2, 8, 8), 200))
        rows.append(f"Case{3000 + patient},{patient},1;2")
    (root / "myops2020_train25" / "same_patient_in_mscmrseg19.csv").write_text("\n".join(rows) + "\n")


def test_build_splits_keeps_each_patient_in_one_split(tmp_path):
    _fake_data(tmp_path)
    splits = build_splits(tmp_path)
    for part in ("train", "val", "test"):
        assert [c.replace("_LGE", "") for c in splits["mscmrseg19_lge"][part]] == splits["patients"][part]
        assert sorted(int(c[4:8]) - 3000 for c in splits["myops2020_train25"][part]) == \
            sorted(int(p[7:]) for p in splits["patients"][part])
    assert sum(len(splits["emidec"][p]) for p in ("train", "val", "test")) == 4


def test_a_myops_case_without_its_patient_is_an_error(tmp_path):
    _fake_data(tmp_path)
    csv_file = tmp_path / "myops2020_train25" / "same_patient_in_mscmrseg19.csv"
    csv_file.write_text("\n".join(csv_file.read_text(encoding="utf-8").splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match="Case3010_LGE"):
        build_splits(tmp_path)


def test_main_regenerates_and_keeps_previous_test_patients(tmp_path):
    _fake_data(tmp_path / "data")
    output = tmp_path / "splits.json"
    output.write_text(json.dumps({"mscmrseg19_lge": {"train": [], "val": ["patient4_LGE"], "test": ["patient9_LGE"]}}))
    main([str(tmp_path / "data"), "-o", str(output)])
    written = json.loads(output.read_text(encoding="utf-8"))
    assert "patient9_LGE" in written["mscmrseg19_lge"]["test"] and "Case3009_LGE" in written["myops2020_train25"]["test"]
    assert "patient4_LGE" in written["mscmrseg19_lge"]["val"]


def test_names_in_gives_a_splits_names_every_case_for_all_and_refuses_a_data_set_it_does_not_cover():
    from ScarEnhanceLib.splits import names_in
    splits = {"emidec": {"train": ["a"], "val": ["b"], "test": ["c"]}}
    assert names_in(splits, Path("somewhere/emidec"), "val") == ["b"]
    assert names_in(splits, Path("somewhere/other"), "all") is None
    with pytest.raises(ValueError, match="do not cover the data set 'other'"):
        names_in(splits, Path("somewhere/other"), "val")
