"""Ray's ray.experimental names that Ray Core's docs use (tqdm_ray)."""
