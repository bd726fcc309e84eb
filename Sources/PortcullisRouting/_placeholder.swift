enum _PlaceholderPortcullisRouting {}
