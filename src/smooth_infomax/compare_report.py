"""The page of ``smooth-infomax compare``: every model, layer by layer, built with :mod:`smooth_infomax.report`.

:func:`build_compare_report` turns :func:`smooth_infomax.compare.compare_models` results into ``OUT/report.html``:
the models, one probe table (and accuracy-by-depth figure) per task, the concentration / total correlation /
disentanglement table, the Gaussian-posterior table (deterministic models and outputs marked, not given
numbers), the ICS table and curves, and the listening examples - every clip with its log-mel spectrogram, every
traversal with its strip of spectrograms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .analysis.plots import ics_curves, layer_profile_plot
from .report import Section, audio, esc, figure, fmt, fmt_pct, paragraph, pre, table, traversal_strip, write_report


def _hop_ms(hop: int, sr: int) -> str:
    return f"{1000.0 * hop / sr:g}"


def _cmp_models_table(models: dict[str, Any]) -> str:
    rows = []
    for name, m in models.items():
        i = m["info"]
        hops = sorted({_hop_ms(h, i["sample_rate"]) for h in i["hops"]}, key=float)
        dims = ", ".join(map(str, sorted(set(i["dims"]))))
        rows.append([name, i["kind"], i["spec"], str(len(i["outputs"])), ", ".join(hops), dims,
                     "yes" if i["stochastic"] else "no", i["fingerprint"]])
    return table(["model", "kind", "source", "outputs", "hop (ms)", "dims", "Gaussian posterior", "fingerprint"], rows)


def _cmp_probe_section(results: dict[str, Any], fig_dir: Path) -> Section:
    parts = []
    for task in results["tasks"]:
        rows, series, chance = [], {}, None
        for name, m in results["models"].items():
            p = m["probes"].get(task)
            if p is None:
                continue
            chance = p["chance"]
            accs = []
            for j, out in enumerate(m["info"]["outputs"]):
                e = p["outputs"].get(out)
                accs.append(None if e is None else e["accuracy_mean"])
                hop = _hop_ms(m["info"]["hops"][j], m["info"]["sample_rate"])
                rows.append([name, out, hop, str(m["info"]["dims"][j]),
                             "–" if e is None else fmt_pct(e["accuracy_mean"], e["accuracy_std"]),
                             "–" if e is None else fmt_pct(e["macro_f1_mean"]), fmt_pct(p["chance"]),
                             "–" if e is None else fmt_pct(e["majority"]), "–" if e is None else str(e["n_test"])])
            series[name] = accs
        if not rows:
            continue
        parts.append(f"<h3>{esc(task)}</h3>")
        parts.append(table(["model", "output", "hop (ms)", "dim", "accuracy %", "macro-F1 %", "chance %", "majority %",
                            "n test"], rows))
        png = fig_dir / f"probe_{task}.png"
        layer_profile_plot(series, png, title=f"{task} probe accuracy by layer", chance=chance)
        parts.append(figure(png, f"{task}: accuracy per output against relative depth; dotted: chance"))
    return Section("Linear probes", parts, note="Mean ± std over seeds on the whole test split. Inputs are posterior "
                   "means (deterministic models: their features), standardised per dimension with training-set "
                   "statistics; time-mean pooling per item (phones: 10 ms label frames).")


def _tc_cell(a: dict[str, Any]) -> str:
    """Gaussian TC, with the dead dimensions it left out (and why it is missing, when it is)."""
    if a.get("tc_gaussian") is None:
        return "singular" if a.get("tc_gaussian_error") else "–"
    dead = int(a.get("constant_dims") or 0)
    return fmt(a["tc_gaussian"]) + (f" ({dead} const. dims left out)" if dead else "")


def _cmp_metrics_section(results: dict[str, Any]) -> Section:
    rows, post_rows = [], []
    for name, m in results["models"].items():
        conc = (m.get("concentration") or {}).get("outputs", {})
        ana = m["analysis"]["outputs"]
        for out in m["info"]["outputs"]:
            c, a = conc.get(out, {}), ana.get(out, {})
            rows.append([name, out, fmt(a.get("dim")), fmt(c.get("participation_ratio")),
                         fmt(c.get("participation_ratio_fraction")), fmt(c.get("gini")), fmt(c.get("dims_for_energy")),
                         _tc_cell(a), fmt(a.get("tc_knn")), fmt(a.get("mig")),
                         fmt(a.get("dci_disentanglement")), fmt(a.get("dci_completeness")), fmt(a.get("sap"))])
            if "active_dimensions" in a:
                post_rows.append([name, out, fmt(a.get("active_dimensions")), fmt(a.get("kl_aggregate_posterior"))])
            elif m["info"]["stochastic"]:
                post_rows.append([name, out, "deterministic output: no posterior", "skipped"])
            else:
                post_rows.append([name, out, "deterministic model: no posterior", "skipped"])
    first = next(iter(results["models"].values()))
    task = (first.get("concentration") or {}).get("task", "–")
    factors = ", ".join(first["analysis"].get("factors", [])) or "none (MIG/DCI/SAP skipped)"
    return Section("Inside the representations", [
        table(["model", "output", "dim", "part. ratio", "PR / dim", "Gini", "dims for 90%", "TC gauss (nats)",
               "TC kNN (nats)", "MIG", "DCI dis.", "DCI comp.", "SAP"], rows),
        paragraph("Gaussian-posterior statistics, only for outputs with a Gaussian posterior (frame-level, "
                  "every module sampled as at inference): active dimensions (variance of the posterior means above "
                  "0.01) and the KL of the aggregate posterior to N(0, I). Deterministic models and outputs are "
                  "skipped, not given numbers."),
        table(["model", "output", "active dims", "aggregate KL to N(0, I)"], post_rows)],
        note=f"Concentration: weights of a bias-free {task} probe on standardised features (mean |w| over seeds). "
             f"TC on frame-level posterior means: the Gaussian estimator (scale-invariant, debiased) on all "
             f"non-constant dims and "
             f"the k-NN estimator on seeded subsets of standardised dims. MIG/DCI/SAP of time-mean features against "
             f"{factors}. Same items and seeds for every model.")


def _cmp_decoder_sections(results: dict[str, Any], fig_dir: Path) -> list[Section]:
    rows, curves, listen = [], {}, []
    for name, m in results["models"].items():
        if not m["decoders"]:
            listen.append(paragraph(f"{name}: no decoder (--decode none)"))
        for d in m["decoders"]:
            s = d["ics"]
            rows.append([name, d["output"], str(d.get("architecture")), fmt(d.get("val_mse")), str(s["n_items"]),
                         fmt(s["e_max"]), fmt(s["dims_to_half"]), fmt(s["auc"])])
            curves[f"{name} {d['output']}"] = (s["ds"], s["relative"])
            t = d["traversal"]
            listen.append(f"<h3>{esc(name)}, output {esc(d['output'])} ({esc(d.get('architecture'))} decoder)</h3>")
            for orig, recon in d["reconstructions"]:
                listen.append(audio(orig, f"original {Path(orig).stem.split('_')[-1]}"))
                listen.append(audio(recon, f"reconstruction {Path(recon).stem.split('_')[-1]}"))
            label = f"z{t['dim']}"
            listen.append(traversal_strip(
                t["files"], t["steps"], fig_dir / f"traversal_{_slug_name(name)}_{_slug_name(d['output'])}.png",
                f"{name} {d['output']}: traversal of dim {t['dim']} from mean - 2.68 std to mean + 2.68 std "
                f"(mean {t['centre']:.3g}, std {t['std']:.3g}); panels labelled in std units",
                value_name=label))
            for f, k in zip(t["files"], t["steps"]):
                listen.append(audio(f, f"{label} = mean {k:+.2f} std"))
            if d["prior"]:
                listen.extend(audio(f, f"N(0, I) sample {j}") for j, f in enumerate(d["prior"]))
            else:
                listen.append(paragraph(f"{name}: no prior samples (deterministic model: no Gaussian prior)"))
    parts = []
    if rows:
        parts.append(table(["model", "output", "decoder", "val MSE", "items", "E_max", "dims to halve the error",
                            "area under relative curve"], rows))
        png = fig_dir / "ics.png"
        ics_curves(curves, png)
        parts.append(figure(png, "Interpolation contribution score: relative error after replacing the top-d "
                                 "dimensions (lower at small d = more concentrated)"))
    return [Section("Interpolation contribution score", parts or [paragraph("no decoders were trained")]),
            Section("Listen and look", listen, note="Every clip has its log-mel spectrogram beside the player; "
                    "traversals also as a strip of spectrograms along the traversed values.")]


def _slug_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text))[:40]


def build_compare_report(out: Path, results: dict[str, Any]) -> Path:
    """``out/report.html`` from :func:`smooth_infomax.compare.compare_models` results."""
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    sections = [Section("Models", [_cmp_models_table(results["models"])],
                        note=f"Data: {results['data']} ({results['layout']} layout); probe tasks: "
                             f"{', '.join(results['tasks'])}."),
                _cmp_probe_section(results, fig_dir), _cmp_metrics_section(results),
                *_cmp_decoder_sections(results, fig_dir),
                Section("Settings", [pre(yaml.safe_dump(results["settings"], sort_keys=False))])]
    return write_report(out / "report.html", "smooth-infomax comparison", sections,
                        subtitle=f"{len(results['models'])} models, layer by layer, on the same items and seeds")


__all__ = ["build_compare_report"]
