"""Checks of a training command line, made before Hydra creates a run directory or anything is built.

Each failure is a ValueError whose message names the key, the bad value and what is allowed; the
entry point prints it on one line and exits with status 2.
"""

import difflib
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict

from trpo import checkpoint
from trpo.config import Config, EnvConfig
from trpo.envs import (check_env_id, check_spaces, import_wrapper, make_env, make_envpool, make_render_env,
                       route_mujoco_warnings)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("algo", "env", "logger", "debug", "sweep")
# Keys a resumed run may change: they do not change the experiment.
RESUMABLE_KEYS = ("resume", "total_steps", "device", "torch_threads", "logger", "checkpoint", "eval", "diagnostics")


def schema_keys(schema=Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema."""
    keys = []
    for f in fields(schema):
        default = f.default_factory() if callable(f.default_factory) else f.default
        keys += schema_keys(type(default), f"{prefix}{f.name}.") if is_dataclass(default) else [prefix + f.name]
    return keys


def _keys(overrides: list[str]) -> list[str]:
    return [o.split("=", 1)[0] for o in overrides if "=" in o and not o.startswith(("+", "~", "hydra"))]


def overridden_keys(overrides: list[str]) -> list[str]:
    """The config keys a command line sets: its key=value overrides, and its group choices (env= sets env_id)."""
    return [{"env": "env_id"}.get(key, key) for key in _keys(overrides) if "/" not in key]


def check_keys(overrides: list[str]) -> None:
    """Every key=value override names a key of the schema (group choices are Hydra's to check)."""
    known = schema_keys()
    for key in _keys(overrides):
        if key.startswith("env.kwargs."):  # one of the env's own arguments
            continue
        if key == "env_id":
            raise ValueError("env_id is set by the env choice: choose the environment with env=<Gymnasium id>")
        if key not in known and key not in GROUPS and "/" not in key:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see conf/ and trpo/config.py for the keys"
            raise ValueError(f"{key} is not a config key{hint}")


def composed(overrides: list[str]) -> tuple[DictConfig, Path]:
    """The config Hydra would compose for these overrides (env_id set from the env choice), and its run dir."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # for the ${hydra:...} interpolations
        run_dir = cfg.hydra.run.dir
        cfg.env_id = cfg.hydra.runtime.choices.env
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, Path(run_dir)


def preset_note(env_id: str) -> str | None:
    """None where conf/env/<env_id>.yaml exists; else one line saying that the schema's defaults apply."""
    presets = sorted(path.stem for path in (CONF_DIR / "env").glob("*.yaml"))
    if env_id in presets:
        return None
    close = difflib.get_close_matches(env_id, presets, n=1)
    return (f"{env_id} has no preset in conf/env, so the schema's defaults apply"
            + (f" (did you mean {close[0]}?)" if close else "") + f"; presets: {', '.join(presets)}")


def hydra_message(error: Exception) -> str:
    """Hydra's composition error on one line, with its cause and the available choices."""
    lines = str(error).splitlines()
    message = lines[0] + (f": {str(error.__cause__).splitlines()[0]}" if error.__cause__ else "")
    choices = [line.strip() for line in lines if line.startswith("\t") and "provider=" not in line]
    return message + (f"; available: {', '.join(choices)}" if choices else "")


def resumed(saved: Config, config: Config, keys: list[str]) -> Config:
    """The saved config with the command line's resumable keys; refuses keys that change the experiment."""
    saved_cfg, given = OmegaConf.structured(saved), OmegaConf.structured(config)
    for key in keys:
        if key in ("debug", "sweep"):
            raise ValueError(f"{key}: a resumed run keeps its saved config; only env and logger may be chosen again")
        if key.startswith(RESUMABLE_KEYS):
            OmegaConf.update(saved_cfg, key, OmegaConf.select(given, key))
        elif OmegaConf.select(given, key) != OmegaConf.select(saved_cfg, key):
            raise ValueError(f"{key}={OmegaConf.select(given, key)!r} changes the experiment saved in the run "
                             f"({key}={OmegaConf.select(saved_cfg, key)!r}); a resumed run may only change "
                             f"{', '.join(k.rstrip('.') for k in RESUMABLE_KEYS)}")
    resumed_config = OmegaConf.to_object(saved_cfg)
    resumed_config.resume = config.resume
    return resumed_config


def check_resume_dir(run_dir: Path) -> None:
    """A run directory to resume must hold a checkpoint that loads."""
    if not checkpoint.exists(run_dir / "checkpoints"):
        raise ValueError(f"resume={str(run_dir)!r} is invalid: no checkpoint at {run_dir / 'checkpoints' / checkpoint.LATEST}")
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"resume={str(run_dir)!r} is invalid: no config.yaml in the run directory")
    checkpoint.load(run_dir / "checkpoints")


def resuming(config: Config, run_dir: Path) -> bool:
    """Whether a run continues from run_dir's checkpoint: resume=<run_dir>, or checkpoint.resume=auto and one is there."""
    wanted = config.resume is not None or config.checkpoint.resume == "auto"
    return wanted and checkpoint.exists(run_dir / "checkpoints")


def check_run_dir(config: Config, run_dir: Path) -> None:
    """A new run never writes over another run's metrics; checkpoint.resume=auto continues a checkpoint only
    for the experiment saved beside it, as resume= does."""
    if config.resume is None and config.checkpoint.resume != "auto" and (run_dir / "metrics.jsonl").exists():
        raise ValueError(f"output directory {str(run_dir)!r} already holds a run (metrics.jsonl); continue it with "
                         f"resume={run_dir}, or choose another hydra.run.dir")
    if config.resume is None and resuming(config, run_dir) and (run_dir / "config.yaml").is_file():
        saved = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_dir / "config.yaml"))
        given = OmegaConf.structured(config)
        for key in schema_keys():
            if not key.startswith(RESUMABLE_KEYS) and OmegaConf.select(given, key) != OmegaConf.select(saved, key):
                raise ValueError(f"checkpoint.resume=auto: {key}={OmegaConf.select(given, key)!r} changes the "
                                 f"experiment saved in {run_dir} ({key}={OmegaConf.select(saved, key)!r}); a resumed "
                                 f"run may only change {', '.join(RESUMABLE_KEYS[1:])}")


def check_writable(run_dir: Path) -> None:
    """The run directory, or its nearest existing ancestor, must be writable."""
    existing = run_dir.absolute()
    while not existing.exists():
        existing = existing.parent
    try:  # create and remove a directory: os.access says yes to root even on read-only file systems
        Path(tempfile.mkdtemp(dir=existing)).rmdir()
    except OSError as error:
        raise ValueError(f"output directory {str(run_dir)!r} is not writable: {existing}: {error.strerror}") from None


def check_env_spaces(env_id: str, config: EnvConfig) -> None:
    """Build one env just long enough to read its spaces (gymnasium has no other way to know them), with
    the run's env.kwargs and env.wrappers; an env that rejects them is named with its own message."""
    route_mujoco_warnings()
    for name in config.wrappers:  # each named on its own when it does not import
        import_wrapper(name)
    try:
        env = make_env(env_id, config)
    except (TypeError, ValueError) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        raise ValueError(f"env={env_id} with env.kwargs={config.kwargs} and env.wrappers={config.wrappers} "
                         f"cannot be made: {lines[0]}") from None
    try:
        check_spaces(env_id, env.observation_space, env.action_space)
    finally:
        env.close()


def check_video(env_id: str, config: EnvConfig) -> None:
    """eval.video=true: imageio is installed and one frame of the env renders, before anything is written."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise ValueError("eval.video=true needs imageio and imageio-ffmpeg: pip install 'trpo[video]'") from None
    env = make_render_env(env_id, config)
    try:
        env.reset(seed=0)
        env.render()
    except Exception as error:  # MuJoCo and pygame raise several types when they cannot render
        raise ValueError(f"eval.video=true: {env_id} cannot render ({type(error).__name__}: {error})") from None
    finally:
        env.close()


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' is invalid: no CUDA GPU is available; use device=cpu or device=auto")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def load_config(cfg: DictConfig, overridden: list[str]) -> Config:
    """The composed Hydra config as a validated Config, or the saved one when resuming.

    overridden: the keys the command line sets (see trpo.command_line.overridden_keys).
    Raises ValueError naming the bad key, its value and what is allowed.
    """
    config = OmegaConf.to_object(cfg)
    if config.resume is not None:
        run_dir = Path(config.resume)
        check_resume_dir(run_dir)
        saved = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_dir / "config.yaml"))
        config = resumed(OmegaConf.to_object(saved), config, overridden)
    check_env_id(config.env_id)
    resolve_device(config.device)
    return config


def validated(overrides: list[str], run_dir: Path | None = None) -> tuple[Config, Path]:
    """The run a command line asks for, checked as far as anything is knowable before Hydra starts.

    run_dir: where to write (default: the one Hydra would choose). Raises ValueError naming the problem;
    an override that does not parse raises Hydra's OverrideParseException.
    """
    check_keys(overrides)
    try:
        cfg, default_dir = composed(overrides)
    except OverrideParseException:  # a HydraException too, but Hydra's own to report
        raise
    except HydraException as error:  # a bad group choice or value type, in Hydra's words
        raise ValueError(hydra_message(error)) from None
    config = load_config(cfg, overridden_keys(overrides))
    run_dir = run_dir or (Path(config.resume) if config.resume else default_dir)
    check_run_dir(config, run_dir)
    check_writable(run_dir)
    check_env_spaces(config.env_id, config.env)
    if config.eval.video:
        check_video(config.env_id, config.env)
    if config.env.backend == "envpool":
        make_envpool(config.env_id, 1, config.seed).close()
    return config, run_dir


def check(overrides: list[str]) -> None:
    """validated() for a single run's command line; overrides of Hydra's grammar that do not parse are left
    to Hydra, which reports them (status 1)."""
    try:
        validated(overrides)
    except OverrideParseException:
        return
