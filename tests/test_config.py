"""Config loading and overrides: the path every subcommand takes."""
import textwrap

import ml_collections
import pytest

from vidgen import config as config_lib
from vidgen import main as main_lib
from vidgen.errors import VidgenError


@pytest.fixture
def config_file(tmp_path):
  path = tmp_path / "c.py"
  path.write_text(textwrap.dedent("""
      import ml_collections
      def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.size = arg or "tiny"
        c.train = ml_collections.ConfigDict(dict(steps=10, lr=1e-3, scan=False, shape=(2, 3)))
        return c
  """))
  return str(path)


def test_arg_and_overrides(config_file):
  c = config_lib.load(config_file + ":big", ["train.steps=7", "train.lr=2", "train.scan=true",
                                             "train.shape=(4, 5)"])
  assert c.size == "big"
  assert c.train.steps == 7 and isinstance(c.train.steps, int)
  assert c.train.lr == 2.0 and isinstance(c.train.lr, float)
  assert c.train.scan is True
  assert c.train.shape == (4, 5)


def test_unknown_key_lists_valid_keys(config_file):
  with pytest.raises(VidgenError, match="unknown config key 'train.stepz'") as e:
    config_lib.load(config_file, ["train.stepz=3"])
  assert "train.steps" in str(e.value) and "size" in str(e.value)


def test_wrong_type_refused(config_file):
  with pytest.raises(VidgenError, match="expected int"):
    config_lib.load(config_file, ["train.steps=fast"])


def test_missing_file_refused():
  with pytest.raises(VidgenError, match="does not exist"):
    config_lib.load("configs/no_such_config.py")


def test_split_overrides():
  rest, overrides = config_lib.split_overrides(["--config=x.py", "--config.a.b=1", "--workdir=w"])
  assert rest == ["--config=x.py", "--workdir=w"] and overrides == ["a.b=1"]


def test_cli_unknown_command(capsys):
  assert main_lib.main(["frobnicate"]) == 2
  assert "unknown command" in capsys.readouterr().err


def test_loading_does_not_mutate_caller(config_file):
  base = config_lib.load_config_file(config_file)
  config_lib.apply_overrides(base, ["train.steps=99"])
  assert base.train.steps == 10 and isinstance(base, ml_collections.ConfigDict)
