enum _PlaceholderPortcullisProviders {}
