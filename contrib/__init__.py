"""Optional integrations: OpenTelemetry, ledgers, price sources, logging."""
