"""Template tag libraries of the `trackline.integrations.django` app."""
