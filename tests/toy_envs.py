"""Tiny environments with known answers, registered under Toy* ids."""

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env):
    """Observation [step in episode, episode number mod 2] (float64), reward 1 per step, a 1-D Box action in [-1, 1].

    Terminates after `terminate_at` steps when given; the time limit comes from gym.register.
    Records the last action it received.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, terminate_at: int | None = None):
        self.terminate_at = terminate_at
        self.episode = -1
        self.last_action = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.step_count = 0
        return self._obs(), {}

    def step(self, action):
        self.last_action = np.array(action)
        self.step_count += 1
        terminated = self.terminate_at is not None and self.step_count >= self.terminate_at
        return self._obs(), 1.0, terminated, False, {}

    def _obs(self):
        return np.array([self.step_count, self.episode % 2], dtype=np.float64)


gym.register("ToyTruncated-v0", entry_point=CountingEnv, max_episode_steps=3)
gym.register("ToyTerminating-v0", entry_point=CountingEnv, kwargs={"terminate_at": 2}, max_episode_steps=10)


class FaultyEnv(CountingEnv):
    """CountingEnv whose reward (or observation) turns NaN at step 2 of every `every`-th episode, from
    episode `first` on; with fault="reset", that episode's reset observation is NaN instead."""

    def __init__(self, fault: str, every: int = 3, first: int = 1):
        super().__init__()
        self.fault, self.every, self.first = fault, every, first

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        if self.fault == "reset" and self.episode % self.every == self.first:
            obs = np.full_like(obs, np.nan)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.episode % self.every == self.first and self.step_count == 2:
            if self.fault == "reward":
                reward = float("nan")
            elif self.fault == "observation":
                obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


gym.register("ToyNaNReward-v0", entry_point=FaultyEnv, kwargs={"fault": "reward"}, max_episode_steps=3)
gym.register("ToyNaNObservation-v0", entry_point=FaultyEnv, kwargs={"fault": "observation"}, max_episode_steps=3)
gym.register("ToyNaNReset-v0", entry_point=FaultyEnv, kwargs={"fault": "reset"}, max_episode_steps=3)
gym.register("ToyNaNFirstReset-v0", entry_point=FaultyEnv, kwargs={"fault": "reset", "first": 0}, max_episode_steps=3)


class FailsOnEvenSeeds(CountingEnv):
    """CountingEnv whose step raises when its last reset had an even seed (env 0 of a vector env seeded 0)."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.fails = seed % 2 == 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self.fails:
            raise RuntimeError("this env fails on purpose")
        return super().step(action)


class DiscreteStartEnv(CountingEnv):
    """CountingEnv with actions Discrete(3, start=-1), refusing any action outside {-1, 0, 1}."""

    action_space = gym.spaces.Discrete(3, start=-1)

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        return super().step(action)


gym.register("ToyFailsOnEvenSeeds-v0", entry_point=FailsOnEvenSeeds, max_episode_steps=3)
gym.register("ToyDiscreteStart-v0", entry_point=DiscreteStartEnv, max_episode_steps=3)


class SizedEnv(CountingEnv):
    """CountingEnv whose observation has `size` entries (its counter, then zeros): a kwarg that changes a space."""

    def __init__(self, size: int = 2):
        super().__init__()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float64)

    def _obs(self):
        return np.resize(np.append(super()._obs(), np.zeros(self.observation_space.shape[0])),
                         self.observation_space.shape)


class DoubleReward(gym.RewardWrapper):
    """A wrapper for env.wrappers tests: twice the reward."""

    def reward(self, reward):
        return 2 * reward


gym.register("ToySized-v0", entry_point=SizedEnv, max_episode_steps=3)


class ChoiceEnv(gym.Env):
    """One-step episodes: observation x ~ N(0, I_3), reward = how many components of the action match the
    target that x sets. MultiDiscrete([2, 3]): (x0 > 0, x1 binned at -0.5 and 0.5); MultiBinary(3): x > 0.
    A uniformly random policy gets 5/6 and 3/2; the best, 2 and 3."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)

    def __init__(self, kind: str):
        self.action_space = gym.spaces.MultiDiscrete([2, 3]) if kind == "multi_discrete" else gym.spaces.MultiBinary(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.normal(size=3).astype(np.float32)
        return self.x, {}

    def step(self, action):
        if not self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            target = np.array([self.x[0] > 0, np.digitize(self.x[1], [-0.5, 0.5])])
        else:
            target = self.x > 0
        reward = float((np.asarray(action) == target).sum())
        self.x = self.np_random.normal(size=3).astype(np.float32)
        return self.x, reward, True, False, {}


gym.register("ToyMultiDiscrete-v0", entry_point=ChoiceEnv, kwargs={"kind": "multi_discrete"})
gym.register("ToyMultiBinary-v0", entry_point=ChoiceEnv, kwargs={"kind": "multi_binary"})
