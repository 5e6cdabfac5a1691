"""The benchmark scripts: the GPU report's dry run on the CPU, the batch halving, and failed rows that say why."""
import importlib
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


@pytest.fixture
def bench(monkeypatch):
    """Import benchmarks/<name>.py by name, sys.path restored after (the root has a sample.py of its own)."""
    monkeypatch.setattr(sys, "path", [BENCHMARKS, *sys.path])
    threads = torch.get_num_threads()
    yield importlib.import_module
    torch.set_num_threads(threads)  # the benchmarks set it


def report_sections(text: str) -> dict:
    """{section title: its text} of a gpu_report.py markdown file."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def table_rows(section: str) -> list[str]:
    """The data rows of the markdown tables in a section (not the header or the rule under it)."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [line for i, line in enumerate(lines) if not set(line) <= set("|- ") and
            not (i + 1 < len(lines) and set(lines[i + 1]) <= set("|- "))]


def test_gpu_report_dry_run_fills_every_section(tmp_path):
    out = tmp_path / "report.md"
    started = time.monotonic()
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "gpu_report.py"), "--dry-run", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    print(f"gpu_report.py --dry-run: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-2000:]
    sections = report_sections(out.read_text())
    assert len(sections) == 7
    for title, section in sections.items():
        rows = table_rows(section)
        assert "### " in section and rows, f"{title}: no table\n{section}"
        assert not [row for row in rows if "failed:" in row], f"{title}: failed rows\n{section}"
        took = section.strip().splitlines()[-1]
        assert took.startswith("section took") and "stopped" not in took and "failed" not in took, took
    assert "compile skipped" in sections["Training step, compiled, DiT-S/2"]
    assert sorted(os.listdir(tmp_path / "report_traces")) == [
        "profile.DiT-Mini_2-VCA.torch.json.gz", "profile.DiT-Mini_2-VCA.triton.json.gz", "profile.DiT-Mini_2.json.gz"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_gpu_report_without_gpu_says_so_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "gpu_report.py"), "--out",
                             str(tmp_path / "r.md")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in result.stderr
    assert not (tmp_path / "r.md").exists()


def test_gpu_report_plan_fits_eight_minutes(bench):
    gpu_report = bench("gpu_report")
    sections = gpu_report.plan(["auto", "torch"], None, "trace.json.gz")
    fixed = sum(section.budget_s for section in sections[:-1])  # the last one gets what is left
    assert fixed + 120 <= gpu_report.TOTAL_BUDGET_S <= 8 * 60


def e2e_rows(path) -> dict:
    """{stage: (command, seconds, rate, status)} of gpu_e2e.py's table."""
    rows = {}
    for line in table_rows(open(path).read()):
        stage, command, seconds, rate, status = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows[stage] = (command, float(seconds), rate, status)
    return rows


def test_gpu_e2e_dry_run_runs_every_stage(bench, tmp_path):
    gpu_e2e = bench("gpu_e2e")
    out, work = tmp_path / "e2e.md", tmp_path / "work"
    started = time.monotonic()
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "gpu_e2e.py"), "--dry-run", "--out", str(out),
                             "--work-dir", str(work)], cwd=ROOT, capture_output=True, text=True, timeout=400)
    print(f"gpu_e2e.py --dry-run: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = e2e_rows(out)
    planned = [stage.name for stage in gpu_e2e.plan(gpu_e2e.Paths(str(work)), gpu_e2e.TINY, True, "")]
    assert list(rows) == planned and len(planned) == 10
    assert {stage: status for stage, (_, _, _, status) in rows.items()} == dict.fromkeys(planned, "ok")
    assert len(os.listdir(tmp_path / "e2e_logs")) == len(planned)
    assert "steps/s (log)" in rows["resume DiT-Mini/2-VCA to 3 steps"][2]
    assert rows["sample 8 images, DDIM 2, guidance 1.5"][2].endswith("(8 images)")
    for family, evaluated in (("DiT", [2]), ("SiT", [])):  # DiT: at its first launch's checkpoint, resumed to 3
        log = [json.loads(line) for line in open(work / f"train-{family}" / "log.jsonl")]
        assert [entry["step"] for entry in log if "fid" in entry] == evaluated
        assert max(entry.get("step", 0) for entry in log) == 3
    assert json.load(open(work / "fid" / "report.json"))


def test_gpu_e2e_failed_stages_say_why_and_later_ones_still_run(bench, tmp_path):
    gpu_e2e = bench("gpu_e2e")
    python = sys.executable
    stages = [gpu_e2e.Stage("broken", lambda: [python, "-c", "raise SystemExit('broken on purpose')"], 30),
              gpu_e2e.Stage("needs the broken one", lambda: [python, "-c", "pass"], 30, [str(tmp_path / "absent")]),
              gpu_e2e.Stage("hangs", lambda: [python, "-c", "import time; time.sleep(60)"], 5),
              gpu_e2e.Stage("independent", lambda: [python, "-c", "print('fine')"], 30)]
    out, logs = tmp_path / "e2e.md", tmp_path / "logs"
    logs.mkdir()
    out.write_text(gpu_e2e.TABLE_HEADER)
    gpu_e2e.run_plan(stages, str(out), str(logs), dict(os.environ), 100, str(tmp_path))
    rows = e2e_rows(out)
    assert rows["broken"][3] == "failed: exit status 1: broken on purpose"
    assert rows["needs the broken one"][3].startswith(f"skipped: {tmp_path / 'absent'} is missing")
    assert rows["hangs"][3] == "failed: timed out after 5 s" and 5 <= rows["hangs"][1] < 15
    assert rows["independent"][3] == "ok"
    assert "fine" in open(logs / "04-independent.log").read()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_gpu_e2e_without_gpu_says_so_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "gpu_e2e.py"), "--out", str(tmp_path / "e.md")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in result.stderr
    assert not (tmp_path / "e.md").exists()


def test_batch_halves_on_out_of_memory_and_says_so(bench, capsys, monkeypatch):
    train_step = bench("train_step")

    def measure_pair(base, image_size, batch, device, dtype, backend, args):
        if batch > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {(base, "-"): (0.5, 1.0, None), (f"{base}-VCA", "auto"): (0.6, 1.2, None)}

    monkeypatch.setattr(train_step, "measure_pair", measure_pair)
    train_step.main(["--models", "DiT-Mini/2", "--image-sizes", "32", "--batch-size", "4", "--threads", "1"])
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 2
    assert all("| 1 " in row and "out of memory at batch 4, 2" in row for row in rows)


def test_halving_stops_at_one_and_other_errors_pass(bench):
    common = bench("bench_common")
    cpu = torch.device("cpu")

    def out_of_memory(batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        common.halving_batch(out_of_memory, 4, cpu)
    batch, results, note = common.measure_rows(lambda batch: 1 / 0, ["a", "b"], 4, cpu)
    assert batch == 4 and note == "" and results == {key: "ZeroDivisionError: division by zero" for key in "ab"}


def test_a_failing_kernel_choice_fails_its_row_only(bench, capsys, monkeypatch):
    train_step = bench("train_step")
    set_vca_kernels = train_step.set_vca_kernels

    def no_triton(model, kernels):
        if kernels == "triton":
            raise RuntimeError("no Triton here")
        return set_vca_kernels(model, kernels)

    monkeypatch.setattr(train_step, "set_vca_kernels", no_triton)
    train_step.main(["--models", "DiT-Mini/2", "--image-sizes", "32", "--batch-size", "2", "--rounds", "1",
                     "--threads", "1", "--no-memory", "--vca-kernels", "torch", "triton"])
    rows = table_rows(capsys.readouterr().out)
    assert [row.split("|")[2].strip() for row in rows] == ["-", "torch", "triton"]
    assert "failed: RuntimeError: no Triton here" in rows[2]
    assert "failed" not in rows[0] + rows[1]


def test_gpu_batch_per_model_and_size(bench):
    train_step = bench("train_step")
    cuda = torch.device("cuda")  # only its type is read
    assert [train_step.default_batch(name, px, cuda) for name, px in
            [("DiT-S/2", 256), ("DiT-S/2", 512), ("DiT-XL/2", 256), ("DiT-XL/2", 512)]] == [256, 64, 64, 16]
    assert train_step.default_batch("DiT-XL/2", 256, torch.device("cpu")) == 4


def test_cuda_kernels_are_grouped_by_name(bench):
    profile_step = bench("profile_step")
    names = {
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas": "GEMM",
        "void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64> >()":
            "flash/SDPA attention",
        "triton_poi_fused__to_copy_add_0": "triton (fused)",
        "contrast_values_forward": "triton (fused)",
        "void at::native::conv_depthwise2d_backward_kernel<c10::BFloat16>()": "convolution",
        "void at::native::(anonymous namespace)::CatArrayBatchedCopy<float>()": "copies, cat, transpose",
        "Memcpy DtoD (Device -> Device)": "copies, cat, transpose",
        "void at::native::reduce_kernel<512, 1>()": "reductions, norms",
        "void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor<float> >()": "optimizer, EMA",
        "void at::native::vectorized_elementwise_kernel<4, GeluCUDAKernelImpl>()": "element-wise",
    }
    assert {name: profile_step.kernel_group(name) for name in names} == names
    groups = profile_step.kernel_groups([("contrast_values_forward", 30.0), ("Memset (Device)", 10.0)] * 2, steps=2)
    assert groups == {"triton (fused)": (0.03, 1.0), "copies, cat, transpose": (0.01, 1.0)}


def test_the_fused_vca_path_launches_fewer_kernels(bench, capsys):
    """benchmarks/launch_count.py's counts (Triton interpreted here): the fused path keeps what it gained."""
    bench("launch_count").main(["--dim", "64", "--heads", "2", "--side", "8", "--batch-size", "1"])
    counts = {row.split("|")[1].strip(): [int(cell) for cell in row.split("|")[2:8]]
              for row in table_rows(capsys.readouterr().out)}
    mhsa, torch_path, fused = counts["MHSA"], counts["VCA, torch path"], counts["VCA, fused path"]
    assert fused[4] * 3 <= torch_path[4] and fused[5] < torch_path[5]  # launches, passes: forward + backward
    assert fused[4] <= mhsa[4] + 30


def test_sampling_step_rows_give_vca_against_its_mhsa_twin(bench, capsys):
    bench("sampling_step").main(["--models", "DiT-Mini/2", "--image-size", "32", "--batch-size", "2", "--modes",
                                 "eager", "--vca-kernels", "torch", "--repeats", "1"])
    rows = [line.split("|")[1:-1] for line in table_rows(capsys.readouterr().out)]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [("DiT-Mini/2", "-"), ("DiT-Mini/2-VCA", "torch")]
    assert float(rows[0][5]) == 1.0 and float(rows[1][5]) > 0 and float(rows[1][3]) > 0
