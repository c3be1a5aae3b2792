"""practise-plugin."""
