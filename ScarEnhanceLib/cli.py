"""Command line: ``scarenhance COMMAND ...`` (also ``python -m ScarEnhanceLib``)."""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import shutil
import time
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

from .parameters import WRITTEN_VOLUME_SUFFIXES

EXIT_BAD_INPUT = 2
OUTPUT_FORMATS = tuple(suffix[1:] for suffix in WRITTEN_VOLUME_SUFFIXES)  # the suffixes without their dot


@contextmanager
def _progress_bar(description: str, style: str = "bar"):
    """Progress callbacks (fraction, message): a tqdm bar for people, or ``PROGRESS <fraction> <message>``
    lines on stdout for a program that runs this one (the Slicer module)."""
    if style == "lines":
        def report(fraction: float, message: str) -> None:
            print(f"PROGRESS {fraction:.4f} {description}: {message}", flush=True)
        yield report
        return
    from tqdm import tqdm
    with tqdm(total=1000, desc=description, bar_format="{l_bar}{bar}| {elapsed}<{remaining}") as bar:
        def update(fraction: float, message: str) -> None:
            bar.update(int(fraction * 1000) - bar.n)
        yield update


def _models_dir(args) -> Path:
    from .weights import MODELS_DIR
    return args.models or MODELS_DIR


def _device(args):
    from .pipeline import resolve_device
    return resolve_device(args.device)


def _seed(args) -> None:
    import torch
    torch.manual_seed(args.seed)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser, sampling: bool = True) -> None:
    """``sampling``: the command draws diffusion noise, so it takes a --seed (segmentation alone draws none)."""
    parser.add_argument("--models", type=Path, default=None, help="folder with manifest.json (default: bundled)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    if sampling:
        parser.add_argument("--seed", type=int, default=0, help="same seed, same device: same result")
    parser.add_argument("--progress", default="bar", choices=("bar", "lines"),
                        help="bar: a progress bar; lines: 'PROGRESS <fraction> <message>' lines for programs")


def _add_study_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--series-uid", default=None,
                        help="the Series Instance UID to read from a DICOM folder that holds several series "
                             "(batch: for every study; a CSV's series_uid column names one per study)")
    parser.add_argument("--format", "--output-format", dest="format", default="nii.gz",
                        choices=OUTPUT_FORMATS + ("dicom",),
                        help="dicom (DICOM input only): the enhanced volume as a derived series of the input's study "
                             "in the folder 'enhanced', the other outputs as NIfTI")
    parser.add_argument("--uncertainty-dicom", action="store_true",
                        help="with --format dicom, also the uncertainty as a DICOM series")
    parser.add_argument("--no-report", action="store_true", help="no report.png (it needs matplotlib)")


def _add_enhance_arguments(parser: argparse.ArgumentParser) -> None:
    from .parameters import EnhanceParameters
    defaults = EnhanceParameters()
    parser.add_argument("--sampler", default=defaults.sampler, choices=("fast", "ddpm"),
                        help="fast: SDE DPM-Solver++ with --steps steps; ddpm: the paper's lambda ancestral steps")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lam", "--lambda", dest="lam", type=int, default=defaults.lam,
                        help="partial diffusion: noise the original to this step (of 1000)")
    parser.add_argument("-k", type=int, default=defaults.k, help="samples averaged; their SD is the uncertainty")
    parser.add_argument("--dilation-mm", type=float, default=defaults.dilation_mm, help="in-plane ROI dilation")
    parser.add_argument("--crop-margin", type=float, default=defaults.crop_margin,
                        help="the model sees a square crop this many times the ROI's extent")
    parser.add_argument("--batch-size", type=int, default=0, help="samples per network call (0: automatic)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network (CUDA graphs on a GPU); costs tens of seconds to start, "
                             "so it pays off only for many slices or cases")


def _check_settings(args) -> None:
    """Settings that would fail after the computation fail before it: enhancement parameters, and the report's
    matplotlib."""
    from .parameters import InputError
    _enhance_parameters(args)
    if getattr(args, "uncertainty_dicom", False) and args.format != "dicom":  # demo has neither
        raise InputError("--uncertainty-dicom writes the uncertainty as a DICOM series beside the enhanced one: it "
                         f"needs --format dicom (the format is {args.format})")
    if not args.no_report:
        _report_writer()


def _enhance_parameters(args):
    from .parameters import EnhanceParameters
    return EnhanceParameters(sampler=args.sampler, lam=args.lam, steps=args.steps, k=args.k,
                             dilation_mm=args.dilation_mm, crop_margin=args.crop_margin, seed=args.seed,
                             batch_size=args.batch_size, device=args.device,
                             compile_network=args.compile).validate()


def _load(name: str, args):
    """The model, loaded once per process (``batch`` enhances many studies with it)."""
    return _load_once(name, _models_dir(args), args.device)


@functools.lru_cache(maxsize=None)
def _load_once(name: str, folder: Path, device: str):
    from .pipeline import resolve_device
    from .weights import load
    return load(name, folder, resolve_device(device))


def cmd_segment(args) -> int:
    """One labelmap file, written atomically: no folder lock, so that cases beside each other can be segmented at
    once into their own folder."""
    import SimpleITK as sitk
    from .io import check_output_file, check_outputs_apart, read_image, write_image
    from .pipeline import segment
    from .volume import check_volume
    from .weights import SEGMENTATION
    check_outputs_apart([args.image], [args.output])
    check_output_file(args.output, WRITTEN_VOLUME_SUFFIXES)
    image = read_image(args.image, args.series_uid)
    check_volume(image)  # 2D, 4D, NaN: a clear error before the model loads
    model = _load(SEGMENTATION, args)
    with _progress_bar("segment", args.progress) as progress:
        labels = segment(image, model, progress)
    print(f"labels: {write_image(labels, args.output)}")
    if not sitk.GetArrayViewFromImage(labels).any():
        print(f"warning: no heart found in {args.image}: the labelmap is empty (a short-axis LGE stack is expected)",
              file=sys.stderr)
    return 0


CNR_METRICS = (("cnr_scar_myo", "CNR scar/myocardium"), ("cnr_scar_blood", "CNR scar/blood pool"))


def _file_tags(path: Path) -> dict:
    """The tags of an image file; none where it cannot be read (reading it as an image says why)."""
    from .io import read_dicom_tags
    try:
        return read_dicom_tags(path)
    except RuntimeError:
        return {}


def _derived_series_number(source_tags: dict, output_index: int) -> int:
    """A derived series' number: 100 x the source's plus 1 for the enhanced volume, 2 for the uncertainty (so that
    the two sort beside their source and never take its number); 1001, 1002 where the source gives none."""
    try:
        source = int(source_tags.get("0020|0011", "").strip())
    except ValueError:
        source = 10
    return 100 * max(source, 0) + 1 + output_index


def _csv_value(value):
    """A CSV field: empty where a readout is not available (None, NaN or infinite), as cnr.json's null."""
    from .io import not_a_number
    return "" if value is None or not_a_number(value) else value


def _write_cnr(readouts: dict, output_dir: Path) -> None:
    """cnr.json (strict JSON: null where a readout is not available) and cnr.csv, each number with its region."""
    from .io import atomic_path, strict_json, write_text
    write_text(strict_json(readouts), output_dir / "cnr.json")
    with atomic_path(output_dir / "cnr.csv") as temporary, open(temporary, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["region", "slices", "metric", "original", "enhanced"])
        for region in readouts["regions"].values():
            burden, volume = region["burden_percent"], region["volume"]
            rows = [("volume", "scar % of myocardium", burden["original"], burden["enhanced"])]
            rows += [("volume", metric, volume[f"{metric}_original"], volume[f"{metric}_enhanced"])
                     for metric, _ in CNR_METRICS]
            rows += [(f"slice {row['slice']}", metric, row[f"{metric}_original"], row[f"{metric}_enhanced"])
                     for row in region["slices"] for metric, _ in CNR_METRICS]
            writer.writerows([region["name"], *where, _csv_value(original), _csv_value(enhanced)]
                             for *where, original, enhanced in rows)


IMAGE_OUTPUTS = ("enhanced", "uncertainty", "roi", "labels")


def _dicom_outputs(args) -> tuple:
    """Outputs written as DICOM series with --format dicom (the others as NIfTI)."""
    if getattr(args, "format", None) != "dicom":
        return ()
    return ("enhanced", "uncertainty") if args.uncertainty_dicom else ("enhanced",)


def _output_paths(output_dir: Path, args) -> dict[str, Path]:
    suffix = "nii.gz" if args.format == "dicom" else args.format
    return {name: output_dir / name if name in _dicom_outputs(args) else output_dir / f"{name}.{suffix}"
            for name in IMAGE_OUTPUTS}


def _series_description(name: str, parameters) -> str:
    steps = parameters.steps if parameters.sampler == "fast" else parameters.lam
    return f"ScarEnhance {name} ({parameters.sampler}, {steps} steps, lambda {parameters.lam}, k {parameters.k})"


def run_enhancement(image, labels, args, output_dir: Path, title: str, roi=None,
                    dicom_tags: dict | None = None, readout_labels=None) -> dict:
    """Enhance inside ``roi`` (default: labels > 0), the tissue maps of a tissue-aware model from ``labels``,
    then write images, the readouts of each region of ``readout_labels`` (default: ``labels``; its Scar
    segment, and the n-SD and FWHM regions in its myocardium) and the report into ``output_dir``; returns the
    readouts. ``dicom_tags``: the source series' tags, for DICOM outputs."""
    import SimpleITK as sitk
    from .io import atomic_path, write_dicom_series, write_image
    from .metrics import region_readouts
    from .pipeline import enhance
    from .volume import as_slices, slice_axis
    from .weights import ENHANCEMENT
    parameters = _enhance_parameters(args)
    model = _load(ENHANCEMENT, args)
    with _progress_bar("enhance", args.progress) as progress:
        result = enhance(image, labels, model, parameters, progress, roi=roi)
    labels = labels if readout_labels is None else readout_labels
    images = {"enhanced": result.enhanced, "uncertainty": result.uncertainty, "roi": result.roi, "labels": labels}
    for name, path in _output_paths(output_dir, args).items():
        if name in _dicom_outputs(args):
            write_dicom_series(images[name], path, dicom_tags, _series_description(name, parameters),
                               series_number=_derived_series_number(dicom_tags, IMAGE_OUTPUTS.index(name)))
        else:
            write_image(images[name], path)
    axis = slice_axis(image)
    stacks = [as_slices(sitk.GetArrayFromImage(i).astype("float64"), axis)  # float64: no overflow in the SDs
              for i in (image, result.enhanced, result.uncertainty)]
    label_stack = as_slices(sitk.GetArrayFromImage(labels), axis)
    _warn_about_label_values(label_stack)
    readouts = region_readouts(stacks[0], stacks[1], label_stack)
    readouts["parameters"] = vars(parameters)
    _write_cnr(readouts, output_dir)
    if not args.no_report:
        roi_slices = as_slices(sitk.GetArrayFromImage(result.roi).astype(bool), axis)
        with atomic_path(output_dir / "report.png") as temporary:
            _report_writer()(temporary, *stacks, roi_slices, label_stack, readouts["regions"], title=title)
    _print_readouts(readouts, output_dir, report=not args.no_report)
    return readouts


def _warn_about_label_values(labels) -> None:
    """Labels with other values than 0-3 still give the ROI (> 0), but no readout: say so."""
    import numpy as np
    unexpected = sorted(set(np.unique(labels).tolist()) - {0, 1, 2, 3})
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:6]) + (", ..." if len(unexpected) > 6 else "")
        print(f"scarenhance: warning: the labels hold values other than 1 blood pool, 2 myocardium, 3 scar ({shown}): "
              "they are used as the ROI (> 0), but the readouts find no tissue in them", file=sys.stderr)


def _report_writer():
    from .parameters import InputError
    try:
        from .report import write_report
    except ImportError as error:
        raise InputError(f"report.png needs matplotlib ({error}): pip install matplotlib, "
                         "or pass --no-report") from error
    return write_report


def _number(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"


def _print_readouts(readouts: dict, output_dir: Path, report: bool = True) -> None:
    for region in readouts["regions"].values():
        volume, burden = region["volume"], region["burden_percent"]
        print(f"{region['name']} ({region['description']}): scar {_number(burden['original'])} -> "
              f"{_number(burden['enhanced'])} % of myocardium")
        if region["slices_with_scar"]:
            for metric, label in CNR_METRICS:
                print(f"  {label}, in the {region['name']}: {_number(volume[f'{metric}_original'])} -> "
                      f"{_number(volume[f'{metric}_enhanced'])}")
        else:
            print(f"  no voxel in the {region['name']}: its CNR readouts are not available")
    print(f"results in {output_dir}: enhanced, uncertainty, roi, labels, cnr.json, cnr.csv"
          + (", report.png" if report else ""))


def _enhance_study(image_path: Path, labels_path, roi_path, args, output_dir: Path, title: str,
                   series_uid: str | None = None) -> dict:
    """Read, segment where no labels are given, enhance and write one study; returns its readouts. Inputs,
    settings and the output folder are checked before any computation; the folder is locked while it runs."""
    from .io import check_outputs_apart, dicom_series_files, output_lock, prepare_output_folder, read_dicom_tags, \
        read_image
    from .parameters import InputError
    from .pipeline import segment
    from .volume import check_label_map, check_volume
    from .weights import SEGMENTATION
    check_outputs_apart([image_path, labels_path, roi_path], list(_output_paths(output_dir, args).values()))
    _check_settings(args)
    dicom_tags = None
    if args.format == "dicom":  # the study's tags: of a series folder's first file, or of one (multi-frame) file
        dicom_tags = read_dicom_tags(dicom_series_files(image_path, series_uid)[0]) if Path(image_path).is_dir() \
            else _file_tags(image_path)
        if "0020|000d" not in dicom_tags:
            raise InputError(f"--format dicom writes a derived series of the input's study: {image_path} is not a "
                             "DICOM series folder or DICOM file")
    image = read_image(image_path, series_uid)
    check_volume(image)  # 2D, 4D, NaN: a clear error before the model loads or the output folder is made
    roi = read_image(roi_path) if roi_path is not None else None
    labels = read_image(labels_path) if labels_path is not None else None
    for name, path, label_map in (("labels", labels_path, labels), ("ROI", roi_path, roi)):
        if label_map is not None:  # before the segmentation runs or the output folder is made
            check_label_map(image, label_map, f"the {name} {path}")
    with output_lock(prepare_output_folder(output_dir)):
        _seed(args)
        if labels is None:
            with _progress_bar("segment", args.progress) as progress:
                labels = segment(image, _load(SEGMENTATION, args), progress)
        return run_enhancement(image, labels, args, output_dir, title=title, roi=roi, dicom_tags=dicom_tags)


def cmd_enhance(args) -> int:
    _enhance_study(args.image, args.labels, args.roi, args, args.output, title=Path(args.image).name,
                   series_uid=args.series_uid)
    return 0


SUMMARY_READOUTS = ("cnr_scar_myo", "cnr_scar_blood")


def _summary_row(study, status: str, seconds: float, message: str, readouts: dict | None) -> dict:
    row = {"study": study.id, "status": status, "seconds": round(seconds, 2), "message": message,
           "image": str(study.image), "labels": str(study.labels or "")}
    for key, region in (readouts or {}).get("regions", {}).items():
        for metric in SUMMARY_READOUTS:
            for image in ("original", "enhanced"):
                row[f"{key}_{metric}_{image}"] = region["volume"][f"{metric}_{image}"]
        for image in ("original", "enhanced"):
            row[f"{key}_burden_percent_{image}"] = region["burden_percent"][image]
    return row


def _write_summary(rows: list[dict], path: Path) -> None:
    from .io import atomic_path
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, columns, restval="")
        writer.writeheader()
        writer.writerows([{k: _csv_value(v) for k, v in row.items()} for row in rows])


def cmd_batch(args) -> int:
    """Enhance many studies with the models loaded once; done studies are skipped, a failing one is logged."""
    from .batch import done_folder, find_studies, part_of, partial_folder, summary_name
    from .io import check_outputs_apart, prepare_output_folder
    studies = part_of(find_studies(args.inputs), args.num_parts, args.part_id)
    _check_settings(args)  # bad settings and output folders fail before any study
    # an output folder holding a study's input would mix outputs with the data (a DICOM subfolder could pass for a
    # finished study)
    check_outputs_apart([path for study in studies for path in (study.image, study.labels, study.roi)], [args.output])
    prepare_output_folder(args.output)
    summary = args.output / summary_name(args.num_parts, args.part_id)
    rows, started_all = [], time.monotonic()
    for number, study in enumerate(studies, 1):
        done = done_folder(args.output, study)
        elapsed = time.monotonic() - started_all
        print(f"[{number}/{len(studies)}] {study.id} ({elapsed:.0f} s so far)", flush=True)
        if (done / "cnr.json").exists():  # a finished study: its folder is renamed from .partial when complete
            readouts = json.loads((done / "cnr.json").read_text(encoding="utf-8"))
            rows.append(_summary_row(study, "skipped", 0.0, "outputs complete from an earlier run", readouts))
        elif done.exists():
            print(f"scarenhance: {study.id} failed: {done} is in the way: it is not a finished study (no cnr.json); "
                  "move it, or choose another output folder", file=sys.stderr, flush=True)
            rows.append(_summary_row(study, "failed", 0.0, f"{done} is in the way (no cnr.json)", None))
        else:
            started = time.monotonic()
            partial = partial_folder(args.output, study)
            try:
                readouts = _enhance_study(study.image, study.labels, study.roi, args, partial, title=study.id,
                                          series_uid=study.series_uid or args.series_uid)
                os.replace(partial, done)
                rows.append(_summary_row(study, "done", time.monotonic() - started, "", readouts))
            except Exception as error:  # one bad study must not stop a cohort: logged, summarised, skipped
                print(f"scarenhance: {study.id} failed: {_one_line(error)}", file=sys.stderr, flush=True)
                shutil.rmtree(partial, ignore_errors=True)
                rows.append(_summary_row(study, "failed", time.monotonic() - started, _one_line(error), None))
        _write_summary(rows, summary)  # after every study: an interrupted run still leaves its summary
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "skipped", "failed")}
    print(f"{counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} failed "
          f"in {time.monotonic() - started_all:.0f} s; summary: {summary}")
    return EXIT_BAD_INPUT if counts["failed"] else 0


def _evaluation_plan(args) -> list:
    """(spec, case names or None for all) per data set, each checked before any is evaluated: a split must be
    found for every data set, and the enhancement needs scar labels."""
    from .datasets import DatasetSpec
    from .splits import SPLITS_FILE, load_splits, names_in
    if args.split == "all" and args.splits is not None:
        raise ValueError("--splits chooses the cases of a split: with --split all there is nothing to choose")
    splits = load_splits(args.splits or SPLITS_FILE) if args.split != "all" else {}
    plan = []
    for dataset in args.dataset:
        spec = DatasetSpec.load(dataset)
        if args.task == "enhancement" and not spec.labels_scar:
            raise ValueError(f"{dataset} has no scar labels: the enhancement evaluation needs them")
        names = names_in(splits, dataset, args.split)
        if names is not None and not names:
            raise ValueError(f"the {args.split} split of {Path(dataset).name} holds no cases")
        if any(spec.root.name == other.root.name for other, _ in plan):  # the results are keyed by folder name
            raise ValueError(f"two data sets are named {spec.root.name!r}: evaluate them in separate calls")
        plan.append((spec, names))
    return plan


def _evaluation_cases(args, spec, names) -> list:
    """The cases of ``names`` (None: all), the first ``--max-cases`` (with scar, for enhancement) if given."""
    from .datasets import load_cases
    cases = load_cases(spec, names)
    if args.task == "enhancement" and not any(c.has_scar for c in cases):
        raise ValueError(f"no case of {spec.root.name} in the {args.split} split has scar: the enhancement is "
                         "measured on scar")
    if args.max_cases:
        relevant = [c for c in cases if c.has_scar] if args.task == "enhancement" else cases
        cases = relevant[:args.max_cases]
    return cases


def _enhancement_variants(args) -> dict:
    """name -> enhancer: the chosen settings, plus the ablation's, other models' and the gamma baseline."""
    from dataclasses import replace
    from .evaluate import diffusion_enhancer, gamma_enhancer
    from .weights import ENHANCEMENT, load
    parameters = _enhance_parameters(args)
    model = _load(ENHANCEMENT, args)
    variants = {f"{parameters.sampler}, k={parameters.k}": diffusion_enhancer(model, parameters)}
    if args.ablation:
        variants[f"{parameters.sampler}, k=1"] = diffusion_enhancer(model, replace(parameters, k=1))
        if parameters.sampler == "fast":
            ddpm = replace(parameters, sampler="ddpm")
            variants[f"ddpm-{parameters.lam}, k={parameters.k}"] = diffusion_enhancer(model, ddpm)
            # the same with other noise: how far apart two ddpm runs are, the floor for the fast sampler's gap
            variants[f"ddpm-{parameters.lam}, k={parameters.k}, seed {ddpm.seed + 1}"] = diffusion_enhancer(
                model, replace(ddpm, seed=ddpm.seed + 1))
    for label, folder in args.compare_models:
        variants[f"{label}, {parameters.sampler}, k={parameters.k}"] = diffusion_enhancer(
            load(ENHANCEMENT, folder, _device(args)), parameters)
    if args.gamma_baseline:
        variants[f"gamma correction with the {args.roi_from} labels"] = gamma_enhancer
    return variants


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate, evaluate_segmentation, markdown_table, predicted_labels, segmentation_table
    from .io import prepare_output_folder, strict_json, write_text
    from .weights import SEGMENTATION
    plan = [(spec, _evaluation_cases(args, spec, names)) for spec, names in _evaluation_plan(args)]  # all checked
    prepare_output_folder(args.output)
    results = {}
    for spec, cases in plan:
        if args.task == "segmentation":
            results[spec.root.name] = evaluate_segmentation(cases, _load(SEGMENTATION, args),
                                                            merge_scar=not spec.labels_scar)
            continue
        roi_labels = predicted_labels(_load(SEGMENTATION, args)) if args.roi_from == "segmentation" else None
        for name, enhancer in _enhancement_variants(args).items():
            _seed(args)
            name = name if len(args.dataset) == 1 else f"{spec.root.name}: {name}"
            print(f"evaluating {name}", flush=True)
            results[name] = evaluate(cases, enhancer, roi_labels)
    table = segmentation_table(results) if args.task == "segmentation" else markdown_table(results)
    write_text(table, args.output / f"evaluation_{args.task}.md")
    results_file = args.output / f"evaluation_{args.task}.json"
    write_text(strict_json(results), results_file)
    write_text(strict_json(_evaluation_record(args)), _made_with_paths([results_file])[0])
    print(table)
    return 0


def _evaluation_record(args) -> dict:
    """What an evaluation was made with, written beside it: the data, the split, the models' checksums (each
    ensemble member's too) and the settings, so that two evaluation files can be told to be comparable."""
    from dataclasses import asdict
    from .splits import SPLITS_FILE
    from .weights import ENHANCEMENT, SEGMENTATION, read_manifest, sha256

    def checksums(folder: Path, names) -> dict:
        manifest = read_manifest(folder)
        return {name: [manifest[name]["sha256"], *(m["sha256"] for m in manifest[name].get("members", []))]
                for name in names}
    used = [SEGMENTATION] if args.task == "segmentation" or args.roi_from == "segmentation" else []
    used += [ENHANCEMENT] if args.task == "enhancement" else []
    splits = None if args.split == "all" else Path(args.splits or SPLITS_FILE)
    record = {"task": args.task, "datasets": [Path(d).as_posix() for d in args.dataset], "split": args.split,
              "splits": None if splits is None else _splits_record(splits),
              "splits_sha256": None if splits is None else sha256(splits),
              "max_cases": args.max_cases, "models": _models_dir(args).as_posix(),
              "sha256": checksums(_models_dir(args), used)}
    if args.task == "enhancement":
        record.update(roi_from=args.roi_from, parameters=asdict(_enhance_parameters(args)),
                      compare_models={label: checksums(folder, [ENHANCEMENT])[ENHANCEMENT]
                                      for label, folder in args.compare_models})
    return record


def cmd_compare(args) -> int:
    """Paired, per-case comparison of two evaluations of the same cases, with 95 % intervals."""
    from .compare import compare_evaluations, comparison_table, unpaired_cases
    from .io import check_output_file, check_outputs_apart, write_text
    if args.output is not None:
        check_outputs_apart([args.base, args.candidate, *_made_with_paths([args.base, args.candidate])], [args.output])
        check_output_file(args.output)
    base, candidate = (_evaluation_json(path) for path in (args.base, args.candidate))
    table = comparison_table(compare_evaluations(base, candidate, args.metric, args.groups))
    for label, (only_base, only_candidate) in unpaired_cases(base, candidate, args.groups).items():
        table += (f"\n{label}: left out, as only one evaluation has them: base {', '.join(only_base) or 'none'}; "
                  f"candidate {', '.join(only_candidate) or 'none'}\n")
    table += _made_with_note(args.base, args.candidate)
    print(table)
    if args.output is not None:
        write_text(table, args.output)
    return 0


def _made_with_paths(evaluation_files) -> list[Path]:
    """The records ``evaluate`` writes beside its files: NAME_made_with.json beside NAME.json."""
    return [path.with_name(f"{path.stem}_made_with.json") for path in evaluation_files]


def _made_with_note(base: Path, candidate: Path) -> str:
    """What the records beside two evaluation files say about their data, split and settings: a comparison of
    other cases or settings is no comparison of models, and nothing in the rows shows it. Nothing for one file
    compared with itself (two of its groups)."""
    from .compare import record_differences
    if base.resolve() == candidate.resolve():
        return ""
    paths = dict(zip(("base", "candidate"), _made_with_paths([base, candidate])))
    missing = [role for role, path in paths.items() if not path.is_file()]
    if len(missing) == 2:
        return ""
    if missing:
        return (f"\nno {paths[missing[0]].name} beside the {missing[0]}: whether both evaluations read the same "
                f"data, split and settings is not checked\n")
    records = {role: _evaluation_json(path) for role, path in paths.items()}
    for role, record in records.items():
        if not isinstance(record, dict):
            raise ValueError(f"{paths[role]} is no record of what an evaluation was made with")
    differ, one_sided = record_differences(records["base"], records["candidate"])
    note = ""
    if differ:
        note += ("\nmade with different data, split or settings (base / candidate, from the records beside them):\n"
                 + "".join(f"- {line}\n" for line in differ))
    if one_sided:
        note += "\nrecorded by one evaluation only (not checked):\n" + "".join(f"- {line}\n" for line in one_sided)
    return note or "\nboth made with the same data, split and settings (from the records beside them)\n"


def _evaluation_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation file {path} (`scarenhance evaluate` writes evaluation_<task>.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None


def _label_and_folder(text: str) -> tuple:
    label, separator, folder = text.partition("=")
    if not separator or not label or not folder:
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER, got {text!r}")
    return label, Path(folder)


def cmd_phantom(args) -> int:
    from .io import prepare_output_folder, write_image
    from .phantom import PhantomSpec, make_phantom
    prepare_output_folder(args.output)
    image, labels = make_phantom(PhantomSpec(matrix=args.matrix, slices=args.slices, spacing_mm=args.spacing_mm,
                                             wall=args.wall, scar=args.scar, seed=args.seed))
    print(f"image: {write_image(image, args.output / 'phantom.nii.gz')}")
    print(f"labels: {write_image(labels, args.output / 'phantom_labels.nii.gz')}")
    return 0


def cmd_demo(args) -> int:
    """Segment the sample with the U-Net, enhance inside its ROI, and read CNR in the reference labels
    (the U-Net finds scar only in part, so its own labels would give a misleading scar CNR)."""
    from .io import output_lock, prepare_output_folder, read_image
    from .sample import SAMPLE_IMAGE, SAMPLE_LABELS
    _check_settings(args)
    with output_lock(prepare_output_folder(args.output)):
        return _demo_locked(args, read_image(SAMPLE_IMAGE), read_image(SAMPLE_LABELS))


def _demo_locked(args, image, reference) -> int:
    import SimpleITK as sitk
    from .metrics import dice_per_class
    from .pipeline import segment
    from .sample import SAMPLE_IMAGE
    from .weights import SEGMENTATION
    _seed(args)
    print(f"demo volume: {SAMPLE_IMAGE.name} (see Resources/sample/README.md for its provenance)")
    with _progress_bar("segment", args.progress) as progress:
        predicted = segment(image, _load(SEGMENTATION, args), progress)
    dice = dice_per_class(sitk.GetArrayFromImage(predicted), sitk.GetArrayFromImage(reference))
    print("segmentation Dice against the sample's reference labels: " +
          ", ".join(f"{k} {v:.2f}" for k, v in dice.items()))
    print("enhancing inside the segmented heart (as a user would); CNR read in the reference labels")
    run_enhancement(image, predicted, args, args.output, title="ScarEnhance demo (EMIDEC P050, held out)",
                    readout_labels=reference)
    return 0


# run-config entries that the manifest keeps elsewhere; every other one is a training setting and is recorded
RUN_CONFIG_BOOKKEEPING = ("kind", "model", "iteration", "history")


def cmd_bundle(args) -> int:
    from .weights import add_member, average_weights, install
    configs = [_run_config(run) for run in args.run_dirs]
    first = configs[0]
    files = [run / "model.safetensors" for run in args.run_dirs]
    if len(configs) > 1:
        _check_one_network(args.run_dirs, configs)
    if args.with_start is not None:
        checksum = _check_start_weights(args.run_dirs, configs, args.with_start)
        files.append(args.with_start)
        training = {"data": args.data, **_with_start_provenance(args.run_dirs, configs, args.with_start, checksum)}
    elif len(configs) > 1:
        _check_one_start(args.run_dirs, configs)
        training = {"data": args.data, "weights": "the mean of the runs' weights",
                    "averaged_runs": [{"run": run.as_posix(), **_run_settings(config)}
                                      for run, config in zip(args.run_dirs, configs)]}
    else:
        training = {"data": args.data, **_run_settings(first)}
    info = {"training": training, "split": first.get("trained_on", {}).get("splits", "Resources/splits.json"),
            "license": args.license}
    if args.ensemble and first["kind"] != "segmentation":
        raise ValueError("--ensemble takes segmentation runs: only the segmentation can be an ensemble")
    with tempfile.TemporaryDirectory() as scratch:
        weights = files[0]
        if len(files) > 1:
            weights = Path(scratch) / "mean.safetensors"
            average_weights(files, weights)
        if args.ensemble:
            entry = add_member(weights, args.name, first["model"], _models_dir(args), **info)
            print(f"added to {args.name} as an ensemble member: sha256 {entry['sha256']}")
            return 0
        entry = install(weights, args.name, first["kind"], first["model"], _models_dir(args), **info)
    print(f"installed {args.name}: sha256 {entry['sha256']}")
    return 0


def _run_config(run: Path) -> dict:
    """The settings a training run folder saved beside its weights; a clear error for any other folder."""
    missing = [name for name in ("config.json", "model.safetensors") if not (run / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run} is not a training run's folder: it has no {' and no '.join(missing)} "
                                "(train-segmentation and train-diffusion write both at each checkpoint)")
    return json.loads((run / "config.json").read_text(encoding="utf-8"))


def _check_one_network(runs: list[Path], configs: list[dict]) -> None:
    """Refuse a mean of runs' weights that would not be one network: a run given twice, another network, or
    diffusion runs (their manifest entry must keep the noise level they were trained to, which a mean of runs does
    not record)."""
    if len({run.resolve() for run in runs}) < len(runs):
        raise ValueError("a run is given twice: each run counts once in the mean of their weights")
    if configs[0]["kind"] != "segmentation":
        raise ValueError("only segmentation runs can be bundled as the mean of their weights")
    for run, config in zip(runs[1:], configs[1:]):
        if config["kind"] != configs[0]["kind"] or _network_of(config) != _network_of(configs[0]):
            raise ValueError(f"{run} trained another network than {runs[0]}: only runs of one configuration "
                             "can be bundled as the mean of their weights")


def _check_one_start(runs: list[Path], configs: list[dict]) -> None:
    """Refuse a mean of runs from other start weights (trained apart, their weights need not lie in one basin: the
    mean can be a broken network). Runs saved before runs recorded their start are averaged with a warning."""
    recorded = [(run, _start_of(config)) for run, config in zip(runs, configs) if "start" in config]
    for run, start in recorded[1:]:
        if start != recorded[0][1]:
            raise ValueError(f"{run} started from {start}, {recorded[0][0]} from {recorded[0][1]}: only runs from "
                             "the same start weights can be bundled as the mean of their weights")
    unrecorded = [run.as_posix() for run, config in zip(runs, configs) if "start" not in config]
    if unrecorded:
        print(f"warning: {', '.join(unrecorded)} do not record their start weights (trained before runs did): "
              "make sure all runs started from the same weights", file=sys.stderr)


def _network_of(run_config: dict) -> dict:
    """A segmentation run's network settings, without the test-time orientations (an inference setting that runs
    saved before it existed do not record)."""
    from .segmentation import SegmentationConfig
    network = SegmentationConfig.from_dict(run_config["model"]).to_dict()
    del network["test_time"]
    return network


def _with_start_provenance(runs: list[Path], configs: list[dict], weights: Path, checksum: str) -> dict:
    """The manifest's account of a mean of runs and their start weights (``checksum``): each run's settings."""
    settings = [{"run": run.as_posix(), **_run_settings(config)} for run, config in zip(runs, configs)]
    start = {"start": {"weights": weights.name, "sha256": checksum}}
    if len(runs) == 1:
        return {"weights": f"the mean of the run's weights and the weights it started from ({weights.name}; WiSE-FT)",
                **start, "run": settings[0]}
    return {"weights": f"the mean of {len(runs)} runs' weights and the weights they started from ({weights.name}), "
                       "in equal parts", **start, "averaged_runs": settings}


def _check_start_weights(runs: list[Path], configs: list[dict], weights: Path) -> str:
    """The checksum of ``weights``; refuse a mean with start weights that are not every segmentation run's own
    recorded start. Start weights of another network (a 2D model, or one without the MVO class) are refused by
    ``average_weights``, before anything is written."""
    from .weights import sha256
    if any(config["kind"] != "segmentation" for config in configs):
        raise ValueError("--with-start takes segmentation runs")
    if not Path(weights).is_file():
        raise ValueError(f"no such weights file: {weights}" if not Path(weights).exists()
                         else f"{weights} is not a weights file")
    checksum = sha256(weights)
    for run, config in zip(runs, configs):
        start = config.get("start")
        if start is None:  # trained before runs recorded their start: the user's word for it, as for a mean of runs
            print(f"warning: {run} does not record its start weights (trained before runs did): make sure it "
                  f"started from {weights}", file=sys.stderr)
        elif "sha256" not in start:
            raise ValueError(f"{run} records no start weights: it started from random weights")
        elif checksum != start["sha256"]:
            raise ValueError(f"{weights} are not the weights {run} started from ({_start_of(config)})")
        if sha256(run / "model.safetensors") == checksum:  # a run that records no start could be given as its own
            raise ValueError(f"{weights} are {run}'s own weights: each counts once in the mean")
    return checksum


def _start_of(config: dict) -> str:
    """A run's start, as runs that shared it have it alike (a copy of a weights file under another name too)."""
    start = config["start"]
    return f"weights sha256 {start['sha256'][:12]}" if "sha256" in start else f"random weights of seed {start['seed']}"


def _run_settings(config: dict) -> dict:
    """What the manifest records of a training run: its length, last validations and every training setting."""
    return {"iterations": config["iteration"], "history": config["history"][-3:],
            **{key: value for key, value in config.items() if key not in RUN_CONFIG_BOOKKEEPING}}


def _add_training_arguments(parser: argparse.ArgumentParser, iterations: int, batch_size: int) -> None:
    parser.add_argument("--dataset", type=Path, action="append", required=True,
                        help="dataset folder (repeatable); layout in README, label values from dataset.json or guessed")
    parser.add_argument("--splits", type=Path, default=None,
                        help="case-level splits JSON keyed by dataset folder name (default: Resources/splits.json)")
    parser.add_argument("--run-dir", type=Path, required=True, help="checkpoints and weights go here; resumes if present")
    parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    from .parameters import LR_SCHEDULES, WARMUP_ITERATIONS  # torch-free, so --help stays fast
    parser.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES,
                        help=f"constant, or cosine: a {WARMUP_ITERATIONS}-iteration warm-up, then down to 0 at "
                             "--iterations")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--workers", type=int, default=0,
                        help="data-loader processes for augmentation (0: in the training process; a GPU needs several)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="stop after this many minutes of training, with a checkpoint (resume later)")
    parser.add_argument("--scar-weight", type=float, default=1.0,
                        help="loss weight of scar against the rest (diffusion: of scar pixels, 1 being the paper's "
                             "plain masked loss; segmentation: of the scar class in Dice and cross-entropy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-weights", type=Path, default=None,
                        help="start a new run from these weights (the same network, or one with fewer inputs: "
                             "the new inputs start at zero weight)")


def _split_cases(args, train_only: bool = False, keep_mvo: bool = False):
    """(train, validation) cases per dataset, using the splits file where it names the dataset (a data set it does
    not name trains on all its cases, and says so, unless it holds cases the splits hold out: a renamed copy);
    training cases with no-reflow (MVO) kept apart from myocardium if ``keep_mvo``. A ``--splits`` file that does
    not exist is an error, not no splits."""
    from .datasets import DatasetSpec, case_names, load_cases
    from .parameters import InputError
    from .splits import SPLITS_FILE, held_out_among, load_splits
    splits = load_splits(args.splits) if args.splits else load_splits(SPLITS_FILE) if SPLITS_FILE.exists() else {}
    result = []
    for folder in args.dataset:
        spec = DatasetSpec.load(folder)
        split = splits.get(folder.resolve().name)
        if split is None:
            held_out = held_out_among(splits, case_names(spec))
            if held_out:
                raise InputError(f"the splits do not name {folder}, but it holds {len(held_out)} case(s) they hold "
                                 f"out, e.g. {', '.join(held_out[:3])}: it would train on them. Give the folder the "
                                 f"name the splits use, or a --splits file that names it")
            print(f"note: the splits do not name {folder}: all its cases train, none validates", file=sys.stderr)
        train = load_cases(spec, split["train"] if split else None, keep_mvo=keep_mvo)
        validation = load_cases(spec, split["val"]) if split and not train_only else []
        result.append((spec, train, validation))
    return result


def _settings(args, **extra):
    from .train import TrainSettings
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    return TrainSettings(run_dir=args.run_dir, iterations=args.iterations, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, checkpoint_every=args.checkpoint_every,
                         seed=args.seed, device=args.device, workers=args.workers,
                         time_limit_minutes=args.time_limit, init_weights=args.init_weights,
                         scar_weight=args.scar_weight, lr_schedule=args.lr_schedule,
                         trained_on={"datasets": [Path(d).as_posix() for d in args.dataset],
                                     "splits": _splits_record(args.splits)}, **extra)


def _splits_record(splits: Path | None) -> str:
    """The splits file as a run's record and the manifest name it: relative to the repository when inside it."""
    from .splits import SPLITS_FILE
    path = Path(splits or SPLITS_FILE).resolve()
    root = SPLITS_FILE.parent.parent
    return path.relative_to(root).as_posix() if root in path.parents else path.as_posix()


def cmd_train_segmentation(args) -> int:
    from . import labels as L
    from .augment import PatchOptions
    from .segmentation import SegmentationConfig
    from .train import train_segmentation
    datasets = _split_cases(args, keep_mvo=args.mvo_class)
    if args.mvo_class and not any(spec.labelled_classes > L.MVO for spec, _, _ in datasets):
        raise ValueError("--mvo-class needs a data set that labels no-reflow (EMIDEC's label 4); none of these does")
    validation = [(val, spec.labelled_classes) for spec, _, val in datasets if val]
    config = SegmentationConfig(spacing_mm=args.spacing_mm, patch_size=args.patch_size, channels=tuple(args.channels),
                                strides=(2,) * (len(args.channels) - 1), num_res_units=args.num_res_units,
                                normalisation=args.normalisation, context_slices=args.context_slices,
                                dropout=args.dropout, mvo_class=args.mvo_class)
    train_segmentation([(train, spec.labelled_classes) for spec, train, _ in datasets], config,
                       _settings(args, patches=PatchOptions(
                           tissue_contrast=args.tissue_contrast, synthetic_scar=args.synthetic_scar,
                           synthetic_scar_patches=args.synthetic_scar_patches, heart_crops=args.heart_crops,
                           first_third=args.first_third)),
                       validation, shares=args.dataset_share)
    print(f"weights: {args.run_dir / 'model.safetensors'}")
    return 0


def cmd_train_diffusion(args) -> int:
    from .diffusion import DiffusionConfig, map_names
    from .train import train_diffusion
    datasets = _split_cases(args)
    unusable = [spec.root.name for spec, _, _ in datasets if not spec.labels_scar]
    if unusable:
        raise ValueError(f"the diffusion targets need scar labels, which {', '.join(unusable)} lacks")
    if args.scar_map_errors != "within-wall" and args.conditioning != "tissue-scar":
        raise ValueError(f"--scar-map-errors {args.scar_map_errors} shapes the scar maps of --conditioning "
                         f"tissue-scar; a {args.conditioning!r} model reads none")
    config = DiffusionConfig(image_size=args.image_size, block_out_channels=tuple(args.channels),
                             localized=not args.whole_image_noise, noise_hint=args.noise_hint,
                             dropout=args.dropout, conditioning=args.conditioning, normalisation=args.normalisation)
    settings = _settings(args, max_timestep=args.max_timestep, min_snr_gamma=args.min_snr_gamma,
                         augmentation=args.augmentation, scar_map_errors=args.scar_map_errors,
                         original_starts=args.original_starts,
                         original_start_balance=args.original_start_balance)
    training = [train for _, train, _ in datasets]
    predicted = _predicted_training_labels(args, training) if map_names(config) else None  # maps to train on
    train_diffusion(training, config, settings, [validation for _, _, validation in datasets], predicted)
    print(f"weights: {args.run_dir / 'model.safetensors'}")
    return 0


PREDICTED_LABELS = "predicted_labels.npz"  # in the run folder: the segmentation's labels of the training cases
PREDICTED_BY = "predicted_labels_made_with.json"  # beside it: the checksums of the segmentation that made them


def _predicted_training_labels(args, datasets) -> dict:
    """The segmentation model's labels of every training case (one source of the tissue maps), computed once per
    run folder and kept there with the segmentation's checksums, so that a resumed run trains on the same maps, and
    a resume with another segmentation is refused rather than trained on maps it did not make."""
    import numpy as np
    from .evaluate import predicted_labels
    from .io import atomic_path, strict_json, write_text
    from .parameters import InputError
    from .weights import SEGMENTATION, read_manifest
    path, made_with = Path(args.run_dir) / PREDICTED_LABELS, Path(args.run_dir) / PREDICTED_BY
    entry = read_manifest(_models_dir(args)).get(SEGMENTATION) or {}  # none: loading it below says so
    checksums = [entry.get("sha256"), *(m.get("sha256") for m in entry.get("members", []))]
    if path.exists():
        recorded = json.loads(made_with.read_text(encoding="utf-8")) if made_with.exists() else None
        if recorded is not None and recorded.get("sha256") != checksums:  # runs before this record: not known
            raise InputError(f"{path} was made by another segmentation model (sha256 {recorded.get('sha256')}) than "
                             f"the one in {_models_dir(args)}: resume with --models naming that one, or start a new "
                             "run folder")
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    labels_of = predicted_labels(_load(SEGMENTATION, args))
    predicted = {case.name: labels_of(case) for cases in datasets for case in cases}
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:  # a file: savez adds no suffix
        np.savez_compressed(stream, **predicted)
    write_text(strict_json({"sha256": checksums, "models": _models_dir(args).as_posix()}), made_with)
    return predicted


def build_parser() -> argparse.ArgumentParser:
    from . import ENHANCEMENT, KINDS, SEGMENTATION, __version__
    from .parameters import (AUGMENTATIONS, CONDITIONINGS, NORMALISATIONS,  # torch-free, so --help stays fast
                             SCAR_MAP_ERRORS, SYNTHETIC_SCAR_PATCHES)
    from .splits import SPLIT_CHOICES  # numpy only
    parser = argparse.ArgumentParser(prog="scarenhance", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scarenhance {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--stop-on-stdin-eof", action="store_true",
                        help="exit when stdin ends (for programs that run this one and cancel by closing the pipe)")
    commands = parser.add_subparsers(dest="command", required=True)

    seg = commands.add_parser("segment", help="segment the heart (blood pool, myocardium, scar)")
    seg.add_argument("image", type=Path, help="3D LGE volume: NIfTI, NRRD, MHA, or a DICOM series folder")
    seg.add_argument("-o", "--output", type=Path, required=True, help="labelmap file to write")
    seg.add_argument("--series-uid", default=None,
                     help="the Series Instance UID to read from a DICOM folder that holds several series")
    _add_model_arguments(seg, sampling=False)
    seg.set_defaults(func=cmd_segment)

    enh = commands.add_parser("enhance", help="enhance scar inside the heart ROI")
    enh.add_argument("image", type=Path, help="3D LGE volume: NIfTI, NRRD, MHA, or a DICOM series folder")
    enh.add_argument("--labels", type=Path, default=None,
                     help="labelmap (1 blood pool, 2 myocardium, 3 scar; ROI = all > 0); default: segment")
    enh.add_argument("--roi", type=Path, default=None,
                     help="heart ROI mask to enhance inside (> 0), e.g. corrected by hand; default: labels > 0")
    enh.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _add_study_output_arguments(enh)
    _add_enhance_arguments(enh)
    _add_model_arguments(enh)
    enh.set_defaults(func=cmd_enhance)

    serve = commands.add_parser("serve", help="run commands read from stdin (one JSON list of arguments per line) "
                                              "with the models kept loaded; for programs such as the Slicer module")
    serve.set_defaults(func=cmd_serve)

    batch = commands.add_parser(
        "batch", help="enhance many studies: folders, globs or a CSV; resumable; one summary CSV",
        description="Enhance every study found in INPUTS with the models loaded once. A study is an image file "
                    "(with NAME_labels.nii.gz beside it as its labels, else it is segmented), a DICOM series "
                    "folder, or a row of a CSV with columns image[,labels][,roi][,id]. Outputs go to OUT/<study>/; "
                    "studies already finished there (with their cnr.json) are skipped, so a stopped run resumes; a "
                    "folder in the way without one is reported as failed. --num-parts N --part-id I "
                    "take every N-th study from the I-th (0-based), e.g. one part per SLURM array task or GPU.")
    batch.add_argument("inputs", nargs="+", help="folders, image files, DICOM folders, glob patterns or CSV files")
    batch.add_argument("-o", "--output", type=Path, required=True, help="output folder (one subfolder per study)")
    _add_study_output_arguments(batch)
    batch.add_argument("--num-parts", type=int, default=1, help="split the studies into this many parts")
    batch.add_argument("--part-id", type=int, default=0, help="which part this process runs (0-based)")
    _add_enhance_arguments(batch)
    _add_model_arguments(batch)
    batch.set_defaults(func=cmd_batch)

    ev = commands.add_parser("evaluate", help="SSIM, PSNR and CNR table (or segmentation Dice) over labelled datasets")
    ev.add_argument("dataset", type=Path, nargs="+", help="dataset folders, each evaluated on its own")
    ev.add_argument("--split", default="test", choices=SPLIT_CHOICES,
                    help="the cases of this split of each data set (test by default); all: every case, for data "
                         "sets the splits file does not name")
    ev.add_argument("--splits", type=Path, default=None,
                    help="case-level splits JSON keyed by dataset folder name (default: Resources/splits.json)")
    ev.add_argument("--task", default="enhancement", choices=("enhancement", "segmentation"),
                    help="enhancement: SSIM/PSNR/CNR table; segmentation: Dice per class over the cases that have "
                         "it, whole frame against a heart crop, false-positive scar and scar burden agreement")
    ev.add_argument("--max-cases", type=_non_negative, default=0,
                    help="only the first N cases (with scar, for enhancement)")
    ev.add_argument("--ablation", action="store_true",
                    help="also a single sample (k=1) and ddpm-<lambda>, twice with different seeds (their gap is "
                         "the smallest any sampler can show)")
    ev.add_argument("--roi-from", default="reference", choices=("reference", "segmentation"),
                    help="enhancement: the heart ROI from the reference labels (the paper's protocol) or from the "
                         "bundled segmentation (the user's path); readouts always use the reference labels")
    ev.add_argument("--gamma-baseline", action="store_true",
                    help="also the paper's gamma correction applied with the labels --roi-from gives (with the "
                         "segmentation's: the label-guided baseline a model must beat; with the reference: the target)")
    ev.add_argument("--compare-models", type=_label_and_folder, action="append", default=[], metavar="LABEL=FOLDER",
                    help="also evaluate the enhancement model in FOLDER (e.g. trained with whole-image noise)")
    ev.add_argument("-o", "--output", type=Path, required=True)
    _add_enhance_arguments(ev)
    _add_model_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)

    cmp = commands.add_parser("compare", help="paired per-case comparison of two evaluation JSON files, with the 95 %% "
                                              "interval of each mean difference")
    cmp.add_argument("base", type=Path, help="evaluation_<task>.json of the reference model")
    cmp.add_argument("candidate", type=Path, help="evaluation_<task>.json of the candidate, on the same cases")
    cmp.add_argument("--metric", action="append", default=None,
                     help="only this per-case metric (repeatable; e.g. scar, wall); default every numeric one")
    cmp.add_argument("--groups", nargs=2, default=None, metavar=("BASE_GROUP", "CANDIDATE_GROUP"),
                     help="compare these two groups (e.g. 'emidec: fast, k=5' against the gamma baseline of the same "
                          "file) instead of the groups of the same name")
    cmp.add_argument("-o", "--output", type=Path, default=None, help="also write the table to this Markdown file")
    cmp.set_defaults(func=cmd_compare)

    demo = commands.add_parser("demo", help="segment and enhance the bundled sample volume")
    demo.add_argument("-o", "--output", type=Path, default=Path("demo_output"))
    demo.add_argument("--format", default="nii.gz", choices=OUTPUT_FORMATS)
    demo.add_argument("--no-report", action="store_true", help="no report.png (it needs matplotlib)")
    _add_enhance_arguments(demo)
    _add_model_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    ph = commands.add_parser("phantom", help="write a synthetic LGE phantom with its labels")
    ph.add_argument("-o", "--output", type=Path, required=True)
    ph.add_argument("--matrix", type=int, default=128)
    ph.add_argument("--slices", type=int, default=8)
    ph.add_argument("--spacing-mm", type=float, default=1.5)
    ph.add_argument("--wall", default="normal", choices=("normal", "thin", "thick"))
    ph.add_argument("--scar", default="patchy", choices=("patchy", "subendocardial", "none"))
    ph.add_argument("--seed", type=int, default=0)
    ph.set_defaults(func=cmd_phantom)

    bundle = commands.add_parser("bundle", help="install a training run's weights (or several runs' mean) into the "
                                                "models folder")
    bundle.add_argument("run_dirs", type=Path, nargs="+", metavar="run_dir",
                        help="a training run; several segmentation runs of one configuration, fine-tuned from the "
                             "same weights, are bundled as the mean of their weights")
    bundle.add_argument("--with-start", type=Path, default=None, metavar="WEIGHTS",
                        help="bundle the mean of the segmentation runs' weights and WEIGHTS, the weights they "
                             "started from (checked against each run's recorded start), in equal parts: with one run, "
                             "half of its drift from them undone (WiSE-FT)")
    bundle.add_argument("--ensemble", action="store_true",
                        help="add the weights to the segmentation model already installed under --name, as one more "
                             "network of an ensemble (the networks' probabilities are averaged, each at its own "
                             "spacing), instead of replacing it")
    bundle.add_argument("--name", required=True, choices=sorted(KINDS),
                        help=f"the model to replace (or add a network to): {SEGMENTATION} takes a segmentation run, "
                             f"{ENHANCEMENT} a diffusion run")
    bundle.add_argument("--data", required=True, help="training data, for the manifest")
    bundle.add_argument("--license", required=True)
    bundle.add_argument("--models", type=Path, default=None,
                        help="the models folder to install into (default: the bundled models, Resources/models; give "
                             "a copy of it to try a model without replacing the bundled one)")
    bundle.set_defaults(func=cmd_bundle)

    seg = commands.add_parser("train-segmentation", help="train the heart segmentation U-Net")
    _add_training_arguments(seg, iterations=6000, batch_size=16)
    seg.add_argument("--spacing-mm", type=float, default=1.5)
    seg.add_argument("--patch-size", type=int, default=128)
    seg.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128, 256],
                     help="U-Net channels per level (each level halves the resolution)")
    seg.add_argument("--num-res-units", type=int, default=2, help="residual units per U-Net block")
    seg.add_argument("--normalisation", default="window", choices=("window", "slice"),
                     help="intensity percentiles of each network input (window) or of the whole slice (slice)")
    seg.add_argument("--context-slices", type=int, default=0,
                     help="neighbour slices on each side as extra inputs (2.5D), where slices are at most "
                          "11 mm apart")
    seg.add_argument("--dropout", type=float, default=0.0,
                     help="dropout probability in the U-Net's blocks while training (0: none, the default)")
    seg.add_argument("--mvo-class", action="store_true",
                     help="learn no-reflow (MVO, where a data set labels it: EMIDEC) as a class of its own, counted as "
                          "myocardium in every result (default: trained as myocardium)")
    seg.add_argument("--tissue-contrast", type=float, default=0.0, metavar="SHARE",
                     help="share of patches (0-1) whose blood pool, myocardium and scar each get a brightness gain "
                          "of their own, as sites differ in tissue contrast (default 0: none)")
    seg.add_argument("--synthetic-scar", type=float, nargs="+", default=[0.0], metavar="SHARE",
                     help="share of patches (0-1) with a scar drawn into their healthy myocardium: a sector from the "
                          "blood pool outwards, brightened towards the blood pool's level; one share for all data "
                          "sets or one per --dataset, in their order (default 0: none)")
    seg.add_argument("--synthetic-scar-patches", choices=SYNTHETIC_SCAR_PATCHES, default="any",
                     help="which patches may get a drawn scar: any, or only those whose labels already hold scar, so "
                          "that a heart without scar is never given one (default: any)")
    seg.add_argument("--heart-crops", type=float, default=0.0, metavar="SHARE",
                     help="share of patches (0-1) cut to a square of 110-200 mm around the heart, zero outside, as a "
                          "volume cropped to the heart gives them (default 0: none)")
    seg.add_argument("--first-third", type=float, default=0.0, metavar="SHARE",
                     help="share of patches (0-1) drawn from the first third of each case's slices (segmented "
                          "worst at every site; basal in the case inspected), the others from any slice (default 0: "
                          "every slice equally often)")
    seg.add_argument("--dataset-share", type=float, nargs="+", default=None, metavar="SHARE",
                     help="share of the batches drawn from each --dataset, in their order (default: equal shares)")
    seg.set_defaults(func=cmd_train_segmentation)

    dif = commands.add_parser("train-diffusion", help="train the enhancement diffusion model")
    _add_training_arguments(dif, iterations=20000, batch_size=16)
    dif.add_argument("--image-size", type=int, default=64)
    dif.add_argument("--channels", type=int, nargs="+", default=[24, 48, 96])
    dif.add_argument("--max-timestep", type=int, default=1000,
                     help="train on t below this only (inference starts at lambda, 250 by default)")
    dif.add_argument("--noise-hint", action="store_true",
                     help="predict the noise as the noise x_t holds where the target equals the original + a residual")
    dif.add_argument("--min-snr-gamma", type=float, default=0.0,
                     help="weigh timesteps by min(SNR, gamma)/SNR (Min-SNR; 5 is usual); 0: the paper's plain loss")
    dif.add_argument("--original-starts", type=float, default=0.0,
                     help="fraction of the samples at t >= max-timestep/2 noised from the original, as inference "
                          "starts, that learn the way to the target (0: the paper's training, on noised targets only)")
    dif.add_argument("--original-start-balance", type=float, default=0.0,
                     help="weigh an original start whose target changes scar by less than this (network units) by "
                          "this / that change, at most 10x, so that a site with a small gamma change counts (0: off)")
    dif.add_argument("--augmentation", choices=AUGMENTATIONS, default="standard",
                     help="standard: contrast, bias field, scale, rotation, flips; strong: also noise, blur, "
                          "intensity curves, shear and elastic deformation")
    dif.add_argument("--dropout", type=float, default=0.0,
                     help="dropout probability in the U-Net's residual blocks while training (0: none, the default)")
    dif.add_argument("--whole-image-noise", action="store_true", help="ablation: noise the whole image, not the ROI")
    dif.add_argument("--conditioning", choices=CONDITIONINGS, default="image",
                     help="image: the network sees the original (the paper's); tissue: also the blood-pool and wall "
                          "maps of the labels (at training: reference, degraded and predicted by the segmentation "
                          "model of --models); tissue-scar: those and the scar map (the Scar label or segment)")
    dif.add_argument("--scar-map-errors", choices=SCAR_MAP_ERRORS, default="within-wall",
                     help="tissue-scar: the errors of the degraded scar maps it trains on; within-wall: border moved, "
                          "missed, false patches, all inside the wall; like-segmentation: also over the endocardial "
                          "border into the blood pool, and false patches on the brightest healthy wall")
    dif.add_argument("--normalisation", choices=NORMALISATIONS, default="slice",
                     help="slice: the network sees the slice's [0, 255] (the paper's); heart: from the slice's "
                          "minimum to the maximum of the crop around the heart")
    dif.add_argument("--models", type=Path, default=None,
                     help="folder with the segmentation model for tissue conditioning (default: bundled)")
    dif.set_defaults(func=cmd_train_diffusion)
    return parser


def _one_line(error: BaseException) -> str:
    """The first line of an error's message (ITK's run to many), or its type where it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


EXIT_CANCELLED = 130


def _stop_when_stdin_closes(on_line=None) -> None:
    """Exit as soon as stdin ends: a program that runs this one (the Slicer module, through a launcher that
    forwards no signal) cancels by closing the pipe, and its death closes it too. Outputs are written whole
    or not at all (temporary names, renamed), so stopping at any moment leaves no half-written file.
    ``on_line``: called with each line that arrives (``serve``'s requests)."""
    import threading

    descriptor = sys.stdin.fileno()

    def watch():  # os.read on the descriptor: no lock of Python's stdin object held at interpreter shutdown
        pending = b""
        try:
            while True:
                chunk = os.read(descriptor, 1 << 16)
                if not chunk:
                    break
                pending += chunk
                while on_line is not None and b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    on_line(line.decode("utf-8", errors="replace"))
                if on_line is None:
                    pending = b""
        except OSError:
            pass
        os._exit(EXIT_CANCELLED)

    threading.Thread(target=watch, daemon=True, name="stdin-watch").start()


SERVE_READY, SERVE_DONE = "READY", "DONE"  # serve's lines: started; a command ended ("DONE <exit code>")


def cmd_serve(args) -> int:
    """Run the commands that arrive on stdin, one JSON list of command-line arguments per line, one after the
    other in this process: the modules stay imported and the models loaded between them, so the Slicer module's
    second click does not pay for them again. Each command ends with a line 'DONE <exit code>'. The end of stdin
    ends the process at once, in the middle of a command too: that is how the Slicer module cancels."""
    import queue
    requests: queue.Queue = queue.Queue()
    _stop_when_stdin_closes(requests.put)
    print(SERVE_READY, flush=True)
    while True:
        code = _serve_one(requests.get())
        print(f"{SERVE_DONE} {code}", flush=True)


def _serve_one(request: str) -> int:
    try:
        argv = json.loads(request)
    except ValueError:
        argv = None
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)) or \
            argv[0].startswith("-") or argv[0] == "serve":
        print("scarenhance: error: each request is one JSON list of arguments that starts with a command "
              "(segment, enhance, ...)", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's errors and --help
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.stop_on_stdin_eof:
        _stop_when_stdin_closes()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("scarenhance: interrupted (outputs are written whole or not at all)", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as error:  # every failure is one line and exit code 2; --debug shows where it came from
        if args.debug:
            raise
        print(f"scarenhance: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
