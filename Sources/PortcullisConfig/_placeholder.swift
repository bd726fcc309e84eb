enum _PlaceholderPortcullisConfig {}
