"""The options of the ppo loop, in a module of their own so the command line can offer them
without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from abcscribe.core.errors import UserError
from abcscribe.core.options import check_options, option


@dataclass(frozen=True)
class PPOConfig:
    """Every knob of the loop, with the defaults, help and rules ``abcscribe ppo`` offers
    (declared once, here)."""

    # rollouts
    # many prompts per step matter more than many samples per prompt: on the toy task of
    # tests/test_ppo.py, 32 prompts x 8 gain +0.08..+0.10 held-out reward in 30 steps, where
    # 8 x 16 gain +0.01 (each step's gradient then follows a handful of clips)
    batch_size: int = option(32, "Prompts per step and process (under torchrun or accelerate launch each process takes its own).", min=1)
    samples_per_prompt: int = option(8, "Completions sampled per prompt.", min=1)
    temperature: float = option(0.7, "Sampling temperature of rollouts (> 0).", above=0.0)
    top_p: float = option(1.0, "Nucleus sampling of rollouts, in (0, 1].", above=0.0, max=1.0)
    max_new_tokens: int = option(256, "Longest completion sampled.", min=1)
    # reward
    weights: dict[str, float] | None = option(None, "Reward weights as in score.", cli=False)
    format_bonus: float = option(0.0, "Added to the reward of a completion that parses as ABC without warnings.")
    revise: bool = option(True, "A model with a note encoder: reward each completion as transcribe writes it, revised by ear (transcribe --revise); --no-revise rewards the language model's own notes.", flags=["--revise/--no-revise"])
    # KL to the reference policy
    kl_coef: float = option(0.1, "Weight of the per-token KL penalty against the reference policy.", min=0.0)
    kl_target: float | None = option(None, "Adapt --kl-coef so the KL per sample approaches this value.", above=0.0)
    # advantages
    advantage: str = option("group", "'group': samples of a prompt normalised against each other (GRPO, no value model); 'gae': a value head and GAE (PPO).", choices=("group", "gae"))
    group_scale: str = option("batch", "Group advantages are divided by the spread of the whole batch ('batch') or of each prompt's samples ('group', as in GRPO).", choices=("batch", "group"))
    gamma: float = option(1.0, "Discount (gae).", min=0.0, max=1.0)
    lam: float = option(0.95, "GAE lambda (gae).", min=0.0, max=1.0)
    vf_coef: float = option(0.5, "Weight of the value loss (gae).", min=0.0, cli=False)
    # update
    clip: float = option(0.2, "PPO clip range of the probability ratio.", above=0.0)
    ppo_epochs: int = option(2, "Passes over each batch of rollouts.", min=1)
    mini_batch_size: int = option(64, "Samples per optimiser step (whole prompts).", min=1)
    entropy_coef: float = option(0.0, "Weight of the entropy bonus.")
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", above=0.0)
    lr: float = option(3e-4, "Learning rate (AdamW).", min=0.0)
    weight_decay: float = option(0.0, "AdamW weight decay.", min=0.0, cli=False)
    max_steps: int = option(50, "Training steps (one batch of rollouts each).", min=1)
    save_steps: int = option(0, "Save a checkpoint-N folder every N steps (0: only at the end).", min=0)
    seed: int = option(0, "Seed of data order and sampling.")

    def check(self) -> None:
        """UserError for values the loop cannot run with."""
        check_options(self)
        if self.advantage == "group" and self.samples_per_prompt < 2:
            raise UserError("--advantage group needs --samples-per-prompt of at least 2")
