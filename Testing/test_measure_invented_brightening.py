"""The invented-brightening diagnostic (benchmarks/measure_invented_brightening.py): where brightening outside scar
lies, and the rules that undo brightening where it is not allowed."""
import numpy as np
import SimpleITK as sitk

from ScarEnhanceLib import labels as L

from conftest import load_benchmark

script = load_benchmark("measure_invented_brightening")


def _heart() -> tuple[np.ndarray, np.ndarray]:
    """One 24x24 slice: a dark wall (rows 4-19, cols 4-19; each of its six sectors holds the remote reference's
    10 pixels or more) around blood, scar in its top two rows."""
    labels = np.zeros((1, 24, 24), np.uint8)
    labels[0, 4:20, 4:20] = L.MYOCARDIUM
    labels[0, 8:16, 8:16] = L.BLOOD_POOL
    labels[0, 4:6, 4:20] = L.SCAR
    image = np.full(labels.shape, 10.0)
    checkerboard = (np.indices(labels.shape[1:]).sum(axis=0) % 2 * 4.0 - 2.0)[None]  # +-2: SD 2, none above 2 SD
    image = np.where(labels == L.MYOCARDIUM, 50.0 + checkerboard, image)
    image[labels == L.BLOOD_POOL] = 200.0
    image[labels == L.SCAR] = 220.0
    return image, labels


def test_brightening_is_undone_only_where_it_is_not_allowed_and_darkening_is_kept():
    original = np.array([[10.0, 10.0, 10.0]])
    enhanced = np.array([[30.0, 30.0, 5.0]])
    allowed = np.array([[True, False, False]])
    np.testing.assert_array_equal(script.limit_brightening(original, enhanced, allowed), [[30.0, 10.0, 5.0]])


def test_only_tissue_brighter_than_remote_myocardium_may_be_brightened():
    image, labels = _heart()
    above = script.above_remote(image, labels)
    assert above[labels == L.SCAR].all() and above[labels == L.BLOOD_POOL].all()
    assert not above[labels == L.MYOCARDIUM].any() and not above[labels == L.BACKGROUND].any()
    assert script.above_remote(image, np.zeros_like(labels)).all()  # no wall, no reference, no rule


def test_invented_brightening_is_counted_by_where_it_lies():
    image, reference = _heart()
    predicted = reference.copy()
    predicted[0, 6, 4:20] = L.SCAR  # the segmentation's scar reaches one row deeper
    enhanced = image.copy()
    enhanced[0, 6, 4:20] += 40  # brightened in healthy myocardium beside scar (16 px, inside predicted scar)
    enhanced[0, 11, 11] += 40  # and in the blood pool, far from scar (1 px)
    enhanced[0, 4:6, 4:20] += 40  # scar itself: not invented
    counts = script.invented_places(image, enhanced, reference, predicted)
    # total; blood, healthy myocardium, background; near scar; in predicted scar; brighter than remote + 2 SD
    assert counts.tolist() == [17, 1, 16, 0, 16, 16, 1]
    table = script.places_table({"emidec": counts})
    assert "| emidec | 17 | 5.9 | 94.1 | 0.0 | 94.1 | 94.1 | 5.9 |" in table


def test_a_rule_applies_to_the_enhancer_it_wraps():
    image_array, labels_array = _heart()
    image = sitk.GetImageFromArray(image_array.astype(np.float32))
    image.SetSpacing((1.5, 1.5, 10.0))
    labels = sitk.GetImageFromArray(labels_array)
    labels.CopyInformation(image)
    calls = []

    def brighten_everything(img, lab):
        calls.append(1)
        return sitk.GetImageFromArray(sitk.GetArrayFromImage(img) + 40)

    model = script.cached(brighten_everything)
    rule = script.RULES["no brightening in the segmentation's blood pool"]
    result = sitk.GetArrayFromImage(script.with_rule(model, rule)(image, labels))
    assert (result[labels_array == L.BLOOD_POOL] == image_array[labels_array == L.BLOOD_POOL]).all()
    assert (result[labels_array == L.SCAR] == image_array[labels_array == L.SCAR] + 40).all()
    script.with_rule(model, script.RULES["no brightening below remote + 2 SD"])(image, labels)
    assert len(calls) == 1  # the model's enhancement is computed once for both rules


def test_the_script_prints_where_brightening_lies_and_a_row_per_rule(phantom_folder, tiny_models, capsys):
    assert script.main([str(phantom_folder), "--models", str(tiny_models), "--split", "all"]) == 0
    printed = capsys.readouterr().out
    assert "Brightened outside reference scar, all split, user's path:" in printed
    data = phantom_folder.name
    assert f"{data}: model" in printed and all(f"{data}: {name}" in printed for name in script.RULES)
