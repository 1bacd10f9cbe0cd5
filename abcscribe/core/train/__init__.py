"""Training loops: ``sft`` (supervised fine-tuning with trl's SFTTrainer) and ``ppo``
(reinforcement learning against the music reward), both over the ``AudioLM`` interface of
``abcscribe.core.models``."""
