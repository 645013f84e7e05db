"""CNN Internals: paper-faithful CNNs and what their feature maps respond to."""
