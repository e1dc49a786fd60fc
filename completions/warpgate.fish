# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_warpgate_global_optspecs
    string join \n home= config= broker= stun= turn= registry= offline no-portmap json v/verbose q/quiet h/help V/version
end

function __fish_warpgate_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_warpgate_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_warpgate_using_subcommand
    set -l cmd (__fish_warpgate_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c warpgate -n "__fish_warpgate_needs_command" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_needs_command" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_needs_command" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_needs_command" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_needs_command" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_needs_command" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_needs_command" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_needs_command" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_needs_command" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_needs_command" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_needs_command" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_needs_command" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_needs_command" -f -a "addr" -d 'Print this node\'s address'
complete -c warpgate -n "__fish_warpgate_needs_command" -f -a "listen" -d 'Accept peers: splice the first one to stdin/stdout, a file or a local port'
complete -c warpgate -n "__fish_warpgate_needs_command" -f -a "connect" -d 'Connect to a peer by address or name'
complete -c warpgate -n "__fish_warpgate_needs_command" -f -a "nat-info" -d 'Show the NAT and network in front of this machine'
complete -c warpgate -n "__fish_warpgate_needs_command" -f -a "name" -d 'Names: claim, look up or release one; local aliases and pinned keys'
complete -c warpgate -n "__fish_warpgate_needs_command" -f -a "registry" -d 'Run a name registry'
complete -c warpgate -n "__fish_warpgate_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l port -d 'Listen port to put in the address [default: derived from the identity]' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand addr" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l port -d 'Port for TCP and UDP [default: derived from the identity; 0 = any free port]' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l forward -d 'Connect each inbound stream to this TCP port (default host: localhost)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l forward-udp -d 'Send the datagrams of a peer\'s `connect --local-udp` to this UDP port (default host: localhost, its IPv4 address first), one socket per flow; not with --forward' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l udp-idle -d 'Close a UDP flow after this many seconds without a datagram either way' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l send -d 'Send this file instead of stdin' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l recv -d 'Write what the peer sends to this file instead of stdout (via FILE.part, resumed if there)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l name -d 'Claim this name on the registries, renew it and republish it when the address changes' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l allow -d 'Accept only this peer: its address, key fingerprint or pinned name (the whole key), or its node id (80 bits of it) (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -s k -l keep-open -d 'Keep accepting peers after the first'
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warpgate -n "__fish_warpgate_using_subcommand listen" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l local -d 'Listen on this local TCP port and carry each connection to the peer\'s --forward' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l local-udp -d 'Listen on this local UDP port and carry each source\'s datagrams to the peer\'s --forward-udp (default host: 127.0.0.1)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l udp-idle -d 'Forget a UDP flow after this many seconds without a datagram either way' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l send -d 'Send this file instead of stdin' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l recv -d 'Write what the peer sends to this file instead of stdout (via FILE.part, resumed if there)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l via -d 'Only these methods: strategies (direct, reverse, tcp_punch, udp_punch, random_probe, relay) and/or transports (tcp, quic)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l timeout -d 'Give up finding a path after this many seconds' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warpgate -n "__fish_warpgate_using_subcommand connect" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l timeout -d 'Give up after this many seconds, whatever is still unanswered' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand nat-info" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -f -a "claim" -d 'Claim NAME for this node on every configured registry (done when a majority accepts)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -f -a "lookup" -d 'Show what NAME resolves to: a local alias, else the registries\' verified record'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -f -a "release" -d 'Give NAME up on every configured registry (a signed release)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -f -a "add" -d 'Remember ALIAS as a local name for ADDRESS, resolved before any registry'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -f -a "list" -d 'Show local aliases and pinned name keys'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -f -a "forget" -d 'Forget NAME\'s pinned key (to accept a new one) and its alias'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and not __fish_seen_subcommand_from claim lookup release add list forget help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l lifetime -d 'How long the record stays valid, in seconds (at most 30 days) [default: 14 days]' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from claim" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from lookup" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from release" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from forget" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from help" -f -a "claim" -d 'Claim NAME for this node on every configured registry (done when a majority accepts)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from help" -f -a "lookup" -d 'Show what NAME resolves to: a local alias, else the registries\' verified record'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from help" -f -a "release" -d 'Give NAME up on every configured registry (a signed release)'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from help" -f -a "add" -d 'Remember ALIAS as a local name for ADDRESS, resolved before any registry'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from help" -f -a "list" -d 'Show local aliases and pinned name keys'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from help" -f -a "forget" -d 'Forget NAME\'s pinned key (to accept a new one) and its alias'
complete -c warpgate -n "__fish_warpgate_using_subcommand name; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -f -a "serve" -d 'Serve the registry\'s HTTP API (docs/names.md) until SIGINT or SIGTERM'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and not __fish_seen_subcommand_from serve help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l bind -d 'Address and port to listen on' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l db -d 'SQLite database of the names [default: registry.db in the home directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l cert -d 'Serve HTTPS with this certificate chain (PEM); needs --key' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l key -d 'The certificate\'s private key (PEM)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l max-names -d 'Names one key may hold' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l writes-per-minute -d 'Claims, renewals and releases per minute from one source address' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l grace -d 'Seconds an expired name stays reserved to its owner (7 days)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l home -d 'State directory: identity key, config, caches (two homes = two nodes on one machine)' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l config -d 'TOML config file [default: config.toml in the config directory]' -r -F
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l broker -d 'MQTT broker for signalling, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l stun -d 'STUN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l turn -d 'TURN server, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l registry -d 'Name registry, replaces the configured list (repeatable)' -r
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l offline -d 'Use no infrastructure at all: direct paths only'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l no-portmap -d 'Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection\'s punching port, and no IPv6 pinhole (PCP) (--offline implies it)'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -l json -d 'Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -s v -l verbose -d 'More detail on stderr (-v: every connection attempt, -vv: debug)'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -s q -l quiet -d 'Only errors on stderr'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -s h -l help -d 'Print help'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from serve" -s V -l version -d 'Print version'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from help" -f -a "serve" -d 'Serve the registry\'s HTTP API (docs/names.md) until SIGINT or SIGTERM'
complete -c warpgate -n "__fish_warpgate_using_subcommand registry; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and not __fish_seen_subcommand_from addr listen connect nat-info name registry help" -f -a "addr" -d 'Print this node\'s address'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and not __fish_seen_subcommand_from addr listen connect nat-info name registry help" -f -a "listen" -d 'Accept peers: splice the first one to stdin/stdout, a file or a local port'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and not __fish_seen_subcommand_from addr listen connect nat-info name registry help" -f -a "connect" -d 'Connect to a peer by address or name'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and not __fish_seen_subcommand_from addr listen connect nat-info name registry help" -f -a "nat-info" -d 'Show the NAT and network in front of this machine'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and not __fish_seen_subcommand_from addr listen connect nat-info name registry help" -f -a "name" -d 'Names: claim, look up or release one; local aliases and pinned keys'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and not __fish_seen_subcommand_from addr listen connect nat-info name registry help" -f -a "registry" -d 'Run a name registry'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and not __fish_seen_subcommand_from addr listen connect nat-info name registry help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and __fish_seen_subcommand_from name" -f -a "claim" -d 'Claim NAME for this node on every configured registry (done when a majority accepts)'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and __fish_seen_subcommand_from name" -f -a "lookup" -d 'Show what NAME resolves to: a local alias, else the registries\' verified record'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and __fish_seen_subcommand_from name" -f -a "release" -d 'Give NAME up on every configured registry (a signed release)'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and __fish_seen_subcommand_from name" -f -a "add" -d 'Remember ALIAS as a local name for ADDRESS, resolved before any registry'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and __fish_seen_subcommand_from name" -f -a "list" -d 'Show local aliases and pinned name keys'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and __fish_seen_subcommand_from name" -f -a "forget" -d 'Forget NAME\'s pinned key (to accept a new one) and its alias'
complete -c warpgate -n "__fish_warpgate_using_subcommand help; and __fish_seen_subcommand_from registry" -f -a "serve" -d 'Serve the registry\'s HTTP API (docs/names.md) until SIGINT or SIGTERM'
