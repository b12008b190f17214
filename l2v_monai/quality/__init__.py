"""What a hospital does around training: how good is each label set, which images to hand-label next,
and bringing hand labels back."""
