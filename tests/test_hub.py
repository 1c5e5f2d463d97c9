"""`--push_to_hub` with the Hub API intercepted at the huggingface_hub boundary: what exactly would be uploaded."""

import json
import shutil
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from helpers import assert_fresh_interpreter_reproduces_logits, base_args, list_records, write_jsonl
from huggingface_hub.utils import filter_repo_objects

from mtl_model import BertForMultiTaskMultiLabel
from run_mtl_classification import cli


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Replace the two HfApi calls the Trainer makes; uploads land in a local folder per repository."""
    remote = tmp_path / "remote"
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, allow_patterns=None, **kwargs):
        calls.append(("upload_folder", repo_id))
        files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        for name in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            target = remote / repo_id / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(folder_path) / name, target)
        info = SimpleNamespace(commit_url=f"fake://{repo_id}", oid="0" * 40)
        if kwargs.get("run_as_future"):
            future = Future()
            future.set_result(info)
            return future
        return info

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return SimpleNamespace(remote=remote, calls=calls)


def test_push_to_hub_uploads_model_code_tokenizer_and_our_card(fake_hub, tiny_bert_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", list_records(8))
    dev = write_jsonl(tmp_path / "dev.jsonl", list_records(4))
    args = base_args(tiny_bert_dir, tmp_path / "out", "--train_file", str(train), "--validation_file", str(dev))
    args += ["--task_columns", "mood,topic", "--do_train", "--do_eval", "--push_to_hub", "--hub_model_id", "me/mtl"]
    assert cli(args) == 0
    assert ("create_repo", "me/mtl") in fake_hub.calls
    uploaded = {p.relative_to(fake_hub.remote / "me/mtl").as_posix() for p in (fake_hub.remote / "me/mtl").rglob("*")}
    assert {"config.json", "model.safetensors", "modeling_mtl.py", "configuration_mtl.py", "README.md"} <= uploaded
    assert {"tokenizer.json", "tokenizer_config.json"} <= uploaded
    assert not [name for name in uploaded if name.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))]
    assert "training_args.json" in uploaded  # the Trainer's pickled training_args.bin, as JSON
    config = json.loads((fake_hub.remote / "me/mtl/config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}
    card = (fake_hub.remote / "me/mtl/README.md").read_text()
    assert "model-index" in card and "## Tasks, labels and decision thresholds" in card and "| mood |" in card
    assert "This model is a fine-tuned version of" not in card  # the Trainer's generic card did not replace ours
    assert 'AutoModel.from_pretrained("me/mtl", trust_remote_code=True)' in card
    # The first code block says what loading without remote code gives, before anything else.
    first_block = card.split("```python", 1)[1].split("```", 1)[0]
    assert first_block.index("trust_remote_code=True is required") < first_block.index("from_pretrained")
    assert "random head" in first_block
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert f"| mood | {results['eval_mood_macro_f1']:.4f} | {results['eval_mood_micro_f1']:.4f} |" in card

    # What was uploaded, loaded where the package is not importable, gives the trained model's logits exactly.
    trained = BertForMultiTaskMultiLabel.from_pretrained(tmp_path / "out")
    results = assert_fresh_interpreter_reproduces_logits(fake_hub.remote / "me/mtl", trained, tmp_path)
    assert results["config"]["tasks"] == trained.config.tasks
    assert results["without_remote_code"] == "BertForSequenceClassification"  # as the card's first lines warn
