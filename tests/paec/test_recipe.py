"""recipes/paper: the paper's setting as a TrainConfig, a service job body and a data
preparation script. With small fixture files in each published layout (DAPO-Math-17K, AIME
from two hubs, AMC, MATH-500; written here, nothing is downloaded): the recipe's config is
accepted with its paths pointed at them, each set loads with the format the recipe reads it
with, the default grader pays 1 for a correct \\boxed{} answer and 0 for a wrong one on every
row, the job body passes the API's request model and the service's hyperparameter checks
into the same TrainConfig, and prepare.py deduplicates, filters and validates as
docs/recipe.md says. No model is trained or loaded (prepare's test loads a tokenizer)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from api.schemas.jobs import CreateFineTuningJobRequest
from paec.config.training import DataFormat, RolloutEngine, TrainConfig, default_grader
from paec.data import Example, load_examples
from paec.formats import DAPO_PROMPT_TEMPLATE, load_config_data, row_converter
from paec.grading.graders import build_grader
from store.errors import InvalidRequestError
from store.hyperparameters import FORMAT_KEYS, JobLimits, resolve_hyperparameters
from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "paper"
DOC = ROOT / "docs" / "recipe.md"


def load_prepare() -> ModuleType:
    """recipes/paper/prepare.py as a module (recipes/ is not a package)."""
    spec = importlib.util.spec_from_file_location("paper_prepare", RECIPE / "prepare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


PREPARE = load_prepare()


def dapo(problem: str, answer: str, index: int) -> dict[str, Any]:
    return {"data_source": "math_dapo",
            "prompt": [{"content": DAPO_PROMPT_TEMPLATE.replace("{problem}", problem),
                        "role": "user"}],
            "ability": "MATH",
            "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"00000000-0000-0000-0000-{index:012d}"}}


# Each set: rows as the hub publishes them, each with (a correct completion, a wrong one).
Case = tuple[dict[str, Any], str, str]
FIXTURES: dict[str, list[Case]] = {
    "dapo-math-17k": [
        (dapo("Find the number of positive divisors of $2^{10}$.", "11", 1),
         "Each divisor is $2^k$, $0 \\le k \\le 10$.\nAnswer: \\boxed{11}", "\\boxed{10}"),
        (dapo("What is the sum of the first $10$ positive integers?", "55", 2),
         "$10 \\cdot 11 / 2 = 55$, so \\boxed{55}.", "So \\boxed{45}."),
        (dapo("If $x + 2 = 7$, what is $x^2$?", "25", 3), "$x = 5$: \\boxed{25}", "\\boxed{49}"),
        (dapo("What is the largest prime factor of $91$?", "13", 4),
         "$91 = 7 \\cdot 13$, \\boxed{13}", "\\boxed{7}"),
    ],
    "aime-2024": [  # HuggingFaceH4/aime_2024: answers as text
        ({"id": 60, "problem": "Find the remainder when $2^{100}$ is divided by $1000$.",
          "solution": "... $\\boxed{376}$", "answer": "376",
          "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1",
          "year": "2024"}, "The remainder is \\boxed{376}.", "The remainder is \\boxed{367}."),
        ({"id": 61, "problem": "What is $3 \\cdot 11$?", "solution": "$\\boxed{033}$",
          "answer": "033", "url": "https://example.org/2024_AIME_I/2", "year": "2024"},
         "\\boxed{33}", "\\boxed{34}"),
        ({"id": 62, "problem": "Compute $12 \\cdot 17$.", "solution": "$\\boxed{204}$",
          "answer": "204", "url": "https://example.org/2024_AIME_II/3", "year": "2024"},
         "So we get \\boxed{204}", "So we get \\boxed{214}"),
    ],
    "aime-2025": [  # MathArena/aime_2025: answers as integers
        ({"problem_idx": 1, "problem": "Find the sum of all integer bases $b > 9$ for which "
                                       "$17_b$ is a divisor of $97_b$.", "answer": 70},
         "The bases are 21 and 49, so \\boxed{70}.", "\\boxed{49}"),
        ({"problem_idx": 2, "problem": "What is $2^{10} - 1000$?", "answer": 24},
         "\\boxed{24}", "\\boxed{42}"),
        ({"problem_idx": 3, "problem": "How many positive divisors does $36$ have?",
          "answer": 9}, "\\boxed{9}", "\\boxed{6}"),
    ],
    "aime-2026": [  # MathArena/aime_2026: the same layout
        ({"problem_idx": 1, "problem": "What is $999 - 1$?", "answer": 998},
         "\\boxed{998}", "\\boxed{999}"),
        ({"problem_idx": 2, "problem": "What is $7 \\cdot 8$?", "answer": 56},
         "It is \\boxed{56}.", "It is \\boxed{54}."),
        ({"problem_idx": 3, "problem": "What is $0 \\cdot 5$?", "answer": 0},
         "\\boxed{0}", "\\boxed{5}"),
    ],
    "amc-2023": [  # AI-MO/aimo-validation-amc: answers as floats, AMC 12 2022 and 2023
        ({"id": 0, "problem": "What is the value of $11 \\cdot 13 - 1$?", "answer": 142.0,
          "url": "https://artofproblemsolving.com/wiki/index.php/2023_AMC_12A_Problems/"
                 "Problem_1"}, "\\boxed{142}", "\\boxed{143}"),
        ({"id": 1, "problem": "What is $\\frac{3}{2} \\cdot 2$?", "answer": 3.0,
          "url": "https://artofproblemsolving.com/wiki/index.php/2023_AMC_12B_Problems/"
                 "Problem_2"}, "The product is \\boxed{3}.", "The product is \\boxed{6}."),
        ({"id": 2, "question": "How many edges does a cube have?", "answer": 12.0},
         "\\boxed{12}", "\\boxed{8}"),
    ],
    "math-500": [  # HuggingFaceH4/MATH-500
        ({"problem": "Convert the point $(0,3)$ in rectangular coordinates to polar "
                     "coordinates.",
          "solution": "... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$",
          "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus",
          "level": 2, "unique_id": "test/precalculus/807.json"},
         "The point is \\boxed{(3, \\frac{\\pi}{2})}.", "The point is \\boxed{(3, \\pi)}."),
        ({"problem": "Solve $3x = 14$.", "solution": "$x = \\boxed{\\frac{14}{3}}$",
          "answer": "\\frac{14}{3}", "subject": "Algebra", "level": 1,
          "unique_id": "test/algebra/1.json"},
         "\\boxed{\\frac{14}{3}}", "\\boxed{\\frac{3}{14}}"),
        ({"problem": "Simplify $(p + q) - 2q$.", "solution": "$\\boxed{p - q}$",
          "answer": "p - q", "subject": "Algebra", "level": 1,
          "unique_id": "test/algebra/2.json"}, "\\boxed{p-q}", "\\boxed{q-p}"),
        ({"problem": "What is $\\sqrt{50}$ in simplest form?", "solution": "$\\boxed{5\\sqrt{2}}$",
          "answer": "5\\sqrt{2}", "subject": "Prealgebra", "level": 2,
          "unique_id": "test/prealgebra/3.json"}, "\\boxed{5\\sqrt 2}", "\\boxed{2\\sqrt{5}}"),
    ],
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def fixtures(tmp_path: Path) -> dict[str, Path]:
    """Each set's fixture file, in its published layout."""
    return {name: write_jsonl(tmp_path / "downloads" / f"{name}.jsonl", [c[0] for c in cases])
            for name, cases in FIXTURES.items()}


def recipe() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECIPE / "train.json").read_text())
    return data


def job() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECIPE / "job.json").read_text())
    return data


def test_the_recipe_is_the_papers_setting_on_vllm_and_eight_processes() -> None:
    cfg = TrainConfig.from_file(RECIPE / "train.json")
    assert cfg.data_format is DataFormat.DAPO
    assert cfg.validation_data_format is DataFormat.AIME
    assert cfg.rollout_engine is RolloutEngine.VLLM
    assert (cfg.num_processes, cfg.dtype, cfg.gradient_checkpointing) == (8, "float32", True)
    assert cfg.use_paec and (cfg.paec.quantile, cfg.paec.anchor_steps) == (0.8, 4)  # reported
    # every process samples an equal share; every prompt fits the engine's window
    assert cfg.prompts_per_step % cfg.num_processes == 0
    assert cfg.vllm_max_model_len - cfg.max_new_tokens >= 512
    assert cfg.grader == default_grader() and cfg.warnings() == []


def test_the_recipe_with_fixture_paths_loads_its_training_and_validation_files(
        fixtures: dict[str, Path]) -> None:
    cfg = TrainConfig.from_dict(recipe() | {"train_data": str(fixtures["dapo-math-17k"]),
                                            "validation_data": str(fixtures["aime-2024"])})
    train, validation = load_config_data(cfg)
    assert [e.answer for e in train] == ["11", "55", "25", "13"]
    assert train[0].messages[0]["content"].startswith("Solve the following math problem")
    assert [e.answer for e in validation] == ["376", "33", "204"]


def test_every_set_prepare_knows_is_one_of_the_recipes_and_the_validation_file_is_one() -> None:
    assert set(PREPARE.SETS) == set(FIXTURES)
    cfg = TrainConfig.from_file(RECIPE / "train.json")
    assert cfg.train_data == f"data/paper/{PREPARE.TRAIN_SET}.jsonl"
    assert PREPARE.SETS[PREPARE.TRAIN_SET][0] == cfg.data_format
    name = Path(str(cfg.validation_data)).stem
    assert PREPARE.SETS[name][0] == cfg.validation_data_format


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_each_set_loads_with_its_format_and_the_grader_pays_only_the_right_answer(
        name: str, fixtures: dict[str, Path]) -> None:
    examples = load_examples(str(fixtures[name]), convert=row_converter(PREPARE.SETS[name][0]))
    grader = build_grader(default_grader())  # the recipe's (asserted above)
    cases = FIXTURES[name]
    assert len(examples) == len(cases)
    for example, (_, right, wrong) in zip(examples, cases, strict=True):
        assert grader.grade(right, example.item).reward == 1.0, (example.answer, right)
        assert grader.grade(wrong, example.item).reward == 0.0, (example.answer, wrong)


def test_the_job_body_passes_the_request_model_and_resolves_to_the_recipes_config() -> None:
    request = CreateFineTuningJobRequest.model_validate(job())
    spec = request.spec()
    assert request.method.type == "reinforcement"
    operator = Settings(max_job_processes=8)  # PAEC_MAX_JOB_PROCESSES=8, as the doc says
    resolved = resolve_hyperparameters(spec.hyperparameters, training_rows=17_000,
                                       limits=JobLimits.from_settings(operator))
    library = TrainConfig.from_file(RECIPE / "train.json").to_dict()
    # The service stores converted rows, so it alone has no data formats.
    assert {k: v for k, v in resolved.config.items() if k not in FORMAT_KEYS} == {
        k: library[k] for k in resolved.config if k not in FORMAT_KEYS}
    assert resolved.device == "gpu" and resolved.total_steps == library["steps"]
    assert spec.grader == library["grader"] and spec.seed == library["seed"]


def test_a_server_left_at_one_process_a_job_refuses_the_job_naming_the_setting() -> None:
    spec = CreateFineTuningJobRequest.model_validate(job()).spec()
    with pytest.raises(InvalidRequestError, match="PAEC_MAX_JOB_PROCESSES") as refused:
        resolve_hyperparameters(spec.hyperparameters, training_rows=17_000,
                                limits=JobLimits.from_settings(Settings(max_job_processes=1)))
    assert refused.value.param == "method.reinforcement.hyperparameters.num_processes"
    assert "PAEC_MAX_JOB_PROCESSES=8" in DOC.read_text()


def test_the_jobs_file_placeholders_are_made_by_the_upload_commands_the_doc_shows() -> None:
    body, doc = job(), DOC.read_text()
    assert body["training_file"] == "file-REPLACE_WITH_TRAIN_FILE_ID"
    assert body["validation_file"] == "file-REPLACE_WITH_VALIDATION_FILE_ID"
    assert "paec files upload data/paper/dapo-math-17k.jsonl --format dapo" in doc
    assert "paec files upload data/paper/aime-2024.jsonl --format aime" in doc
    for placeholder in ("file-REPLACE_WITH_TRAIN_FILE_ID", "file-REPLACE_WITH_VALIDATION_FILE_ID"):
        assert f's/{placeholder}/' in doc


def prepare_downloads(tmp_path: Path) -> Path:
    """The fixtures as prepare.py reads them, with what it must leave out added: DAPO rows
    repeated, one DAPO prompt far over the token limit, AMC rows of 2022."""
    downloads = tmp_path / "downloads"
    for name, cases in FIXTURES.items():
        rows = [c[0] for c in cases]
        if name == "dapo-math-17k":
            long = dapo("Consider the numbers " + ", ".join(map(str, range(400))) + ".", "1", 9)
            rows = [rows[0], rows[1], rows[0], long, rows[2], rows[1], rows[3]]
        if name == "amc-2023":
            rows = [*rows, {"id": 3, "problem": "What is $4 + 4$?", "answer": 8.0,
                            "url": "https://artofproblemsolving.com/wiki/index.php/"
                                   "2022_AMC_12A_Problems/Problem_23"}]
        write_jsonl(downloads / f"{name}.jsonl", rows)
    return downloads


@pytest.mark.slow
def test_prepare_dedupes_and_filters_training_rows_and_keeps_evaluation_sets_whole(
        tmp_path: Path, smollm2_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    downloads, out = prepare_downloads(tmp_path), tmp_path / "data"
    code = PREPARE.main(["--downloads", str(downloads), "--out", str(out),
                         "--tokenizer", str(smollm2_dir), "--max-prompt-tokens", "300"])
    assert code == 0
    tallies = {t["set"]: t for t in map(json.loads, capsys.readouterr().out.splitlines())}
    assert tallies["dapo-math-17k"] == {
        "set": "dapo-math-17k", "format": "dapo", "read": 7, "written": 4, "duplicates": 2,
        "overlong": 1, "other_year": 0}
    assert (tallies["amc-2023"]["written"], tallies["amc-2023"]["other_year"]) == (3, 1)
    assert all(tallies[n]["written"] == len(FIXTURES[n]) for n in FIXTURES
               if n not in ("dapo-math-17k", "amc-2023"))
    train: list[Example] = load_examples(str(out / "dapo-math-17k.jsonl"),
                                         convert=row_converter("dapo"))
    assert [e.answer for e in train] == ["11", "55", "25", "13"]
    written = (out / "aime-2025.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in written] == [c[0] for c in FIXTURES["aime-2025"]]


def test_prepare_refuses_a_file_not_in_its_sets_layout_naming_line_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    downloads = tmp_path / "downloads"
    write_jsonl(downloads / "aime-2025.jsonl", [FIXTURES["aime-2025"][0][0],
                                               {"problem": "x?", "answer": "12.5"}])
    code = PREPARE.main(["--downloads", str(downloads), "--out", str(tmp_path / "data"),
                         "--only", "aime-2025", "--max-prompt-tokens", "0"])
    assert code == 1
    assert "line 2: answer: must be an integer from 0 to 999" in capsys.readouterr().err
    assert not (tmp_path / "data" / "aime-2025.jsonl").exists()
