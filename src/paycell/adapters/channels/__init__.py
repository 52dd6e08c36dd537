"""Bank and card channels: the platform's doors to money outside it."""
