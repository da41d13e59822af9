"""A local OpenAI-compatible emulator (Responses, Conversations, Assistants v2) with scripted assistants and
fault injection, for tests, benchmarks and `switchboard demo`. See docs/EMULATOR.md."""

from emulator.clock import Clock, ManualClock, RealClock
from emulator.errors import APIError
from emulator.faults import Fault, Faults
from emulator.observe import Counters, LogEntry, RequestLog
from emulator.scripts import (
    Plan,
    PlannedCall,
    Rule,
    Script,
    ToolCall,
    ToolResult,
    Turn,
    default_plan,
    default_script,
    load_scripts,
)
from emulator.server import Emulator, run_emulator

__all__ = [
    "APIError",
    "Clock",
    "Counters",
    "Emulator",
    "Fault",
    "Faults",
    "LogEntry",
    "ManualClock",
    "Plan",
    "PlannedCall",
    "RealClock",
    "RequestLog",
    "Rule",
    "Script",
    "ToolCall",
    "ToolResult",
    "Turn",
    "default_plan",
    "default_script",
    "load_scripts",
    "run_emulator",
]
