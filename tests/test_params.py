"""params.yaml reading: every problem is one line that names the file, the key and the fix."""

import pytest

from cnn_internals.core.errors import UserError
from cnn_internals.core.params import get, load_params


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_naming_the_key(value):
    with pytest.raises(UserError, match=r"train.lenet5.j must be a finite number"):
        get({"train": {"lenet5": {"j": value}}}, "train.lenet5.j", kind=(int, float), above=0)


def test_yaml_nan_from_a_file_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  lenet5:\n    j: .nan\n")
    params = load_params(tmp_path / "params.yaml")
    with pytest.raises(UserError, match="finite"):
        get(params, "train.lenet5.j", kind=(int, float))


def test_a_yaml_error_keeps_its_line_and_column(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lenet5:\n    lr: [0.1\n    epochs: 3\n")
    with pytest.raises(UserError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path} is not valid YAML at line 4, column 11")


def test_a_folder_passed_as_params_is_called_a_folder(tmp_path):
    with pytest.raises(UserError, match=r"is a folder: pass the params file itself"):
        load_params(tmp_path)


def test_a_binary_params_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x89PNG")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_params(path)
