"""Lambda event shapes (as AWS documents them) turned into apix deliveries and requests."""
