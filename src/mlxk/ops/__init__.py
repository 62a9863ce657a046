"""Operations: one module per verb. Each returns an Envelope; none prints."""
