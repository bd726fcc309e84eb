enum _PlaceholderPortcullisMockUpstream {}
