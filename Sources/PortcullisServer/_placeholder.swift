enum _PlaceholderPortcullisServer {}
