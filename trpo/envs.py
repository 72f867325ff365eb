"""Vector environments: id check, construction with episode statistics and optional reward scaling."""

import difflib
import functools
import importlib
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import NormalizeReward, RecordEpisodeStatistics

from trpo.config import EnvConfig

AUTORESET = {"same_step": AutoresetMode.SAME_STEP, "next_step": AutoresetMode.NEXT_STEP}
NON_FINITE_REWARD = "non_finite_reward"  # the info key of the rewards SpareRewardScaling kept from the scaling


def check_env_id(env_id: str) -> None:
    """Fail before anything is built when env_id is not a registered Gymnasium id.

    Gymnasium's `module:id` form names one's own env: the module is imported, which registers the id
    (Gymnasium imports it again wherever it makes the env, the env workers' processes included).
    """
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        _import(module, f"env={module}:{env_id}")
        if env_id not in gym.registry:
            raise ValueError(f"env={module}:{env_id} is invalid: importing {module} did not register {env_id!r}")
        return
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else "; see gymnasium.registry for the ids"
        raise ValueError(f"env={env_id!r} is not a registered Gymnasium environment id{hint}")


def _import(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ValueError(f"{what} is invalid: module {module!r} cannot be imported ({error})") from None


def import_wrapper(name: str) -> Any:
    """The env wrapper named `module:Name`, e.g. `gymnasium.wrappers:TimeAwareObservation`."""
    module, _, attribute = name.rpartition(":")
    if not module:
        raise ValueError(f"env.wrappers entry {name!r} is invalid: write module:Name")
    try:
        return getattr(_import(module, f"env.wrappers entry {name!r}"), attribute)
    except AttributeError:
        raise ValueError(f"env.wrappers entry {name!r} is invalid: {module} has no {attribute!r}") from None


def vector_env_options(config: EnvConfig) -> dict:
    """gym.make_vec's arguments for config.kwargs and config.wrappers (around each sub-env)."""
    return {"wrappers": [import_wrapper(name) for name in config.wrappers], **config.kwargs}


def make_env(env_id: str, config: EnvConfig, **options) -> gym.Env:
    """One env as the training envs are made: config.kwargs to gym.make, then config.wrappers around it.

    options: further gym.make arguments (e.g. render_mode).
    """
    env = gym.make(env_id, **config.kwargs, **options)
    for name in config.wrappers:
        env = import_wrapper(name)(env)
    return env


TRACKING_CAMERA = "track"  # Gymnasium's MuJoCo models name their camera that follows the agent's centre of mass so


def make_render_env(env_id: str, config: EnvConfig) -> gym.Env:
    """One env rendering RGB frames that show the agent: a MuJoCo model's tracking camera where it has one
    (since Gymnasium 1.x the default free camera stays where the episode began while the agent runs off);
    other envs (classic control, MuJoCo models without one) render with their own camera."""
    env = make_env(env_id, config, render_mode="rgb_array")
    model = getattr(env.unwrapped, "model", None)
    if model is None or not hasattr(model, "ncam"):
        return env
    import mujoco

    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, TRACKING_CAMERA) == -1:
        return env
    env.close()
    env = make_env(env_id, config, render_mode="rgb_array", camera_name=TRACKING_CAMERA)
    _widen_floors(env.unwrapped.model, mujoco)
    return env


FLOOR_SCALE = 50  # a 40 m floor (HalfCheetah's) ends long before a trained agent's 300 m


def _widen_floors(model, mujoco) -> None:
    """Draw every plane FLOOR_SCALE times wider, its texture repeated as often: a plane collides as an
    infinite one whatever its size, so only the picture changes (the agent no longer runs off the floor)."""
    planes = model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE
    model.geom_size[planes, :2] *= FLOOR_SCALE
    materials = model.geom_matid[planes]
    model.mat_texrepeat[materials[materials >= 0]] *= FLOOR_SCALE


class SpareRewardScaling(gym.vector.VectorWrapper):
    """Below NormalizeReward: a non-finite reward reaches the running statistics as 0 and the collector
    as it was (info[NON_FINITE_REWARD]), so the trainer stops with statistics that every later reward
    would otherwise inherit the NaN from (issue 17)."""

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        if not np.isfinite(rewards).all():
            info = info | {NON_FINITE_REWARD: rewards}
            rewards = np.where(np.isfinite(rewards), rewards, 0.0)
        return obs, rewards, terminated, truncated, info


@functools.cache
def route_mujoco_warnings() -> None:
    """MuJoCo's warnings as Python warnings, each message once per process, not once per env (MuJoCo 4
    prints a compiler deprecation for every model it loads: 16 lines before a HalfCheetah run began)."""
    try:
        import mujoco
    except ImportError:
        return
    mujoco.set_mju_user_warning(_warn_once)


@functools.cache  # Python's own once-per-location registry is reset whenever a library changes the filters
def _warn_once(message: str) -> None:
    warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


def make_vector_env(env_id: str, config: EnvConfig, gamma: float, seed: int = 0) -> gym.vector.VectorEnv:
    """The training vector env: episode statistics on raw rewards, then optional reward scaling.

    seed: EnvPool takes its seeds here, once (Gymnasium's envs are seeded by their first reset).
    """
    route_mujoco_warnings()
    if config.backend == "envpool":
        envs = make_envpool(env_id, config.num_envs, seed)
    else:
        envs = gym.make_vec(env_id, num_envs=config.num_envs, vectorization_mode=config.vectorization,
                            vector_kwargs={"autoreset_mode": AUTORESET[config.autoreset_mode]},
                            **vector_env_options(config))
    check_spaces(env_id, envs.single_observation_space, envs.single_action_space)
    envs = RecordEpisodeStatistics(envs)
    if config.normalize_rewards:
        envs = NormalizeReward(SpareRewardScaling(envs), gamma=gamma)
    return envs


def make_envpool(env_id: str, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    """EnvPool's Gymnasium vector env (next-step autoreset), seeded once: its reset(seed=...) is a no-op."""
    try:
        import envpool
    except ImportError:
        raise ValueError("env.backend='envpool' is invalid: envpool is not installed; "
                         "pip install -e '.[envpool]' or use env.backend=gymnasium") from None
    if env_id not in envpool.list_all_envs():
        raise ValueError(f"env={env_id!r} is not an EnvPool environment; use env.backend=gymnasium")
    warnings.filterwarnings("ignore", message="EnvPool seeds are fixed")  # stepping.start resets with a seed
    return envpool.make_gymnasium(env_id, num_envs=num_envs, seed=seed)


def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    """Flat Box observations, and Box or Discrete actions: what the policies model."""
    if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
        raise ValueError(f"env={env_id!r} has observation space {observation_space}; supported: a 1-D Box")
    one_dimensional = isinstance(action_space, (gym.spaces.Box, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)) \
        and len(action_space.shape) == 1
    if not (isinstance(action_space, gym.spaces.Discrete) or one_dimensional):
        raise ValueError(f"env={env_id!r} has action space {action_space}; supported: a 1-D Box, Discrete, "
                         "a 1-D MultiDiscrete or a 1-D MultiBinary")


def reward_normalizer_state(envs: gym.vector.VectorEnv) -> dict:
    """The running return statistics of NormalizeReward, as tensors for a weights-only checkpoint ({}: none)."""
    if not isinstance(envs, NormalizeReward):
        return {}
    rms = envs.return_rms
    return {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var),
            "count": torch.tensor(rms.count, dtype=torch.float64),
            "accumulated_reward": torch.as_tensor(envs.accumulated_reward)}


def load_reward_normalizer_state(envs: gym.vector.VectorEnv, state: dict) -> None:
    if state and isinstance(envs, NormalizeReward):  # saved without reward scaling: nothing to restore
        envs.return_rms.mean = state["mean"].numpy().astype(np.float64)
        envs.return_rms.var = state["var"].numpy().astype(np.float64)
        envs.return_rms.count = float(state["count"])
        envs.accumulated_reward = state["accumulated_reward"].numpy().copy()
