// The check every browser consumer runs: connect to the reference server, send a message and a
// named event, and receive both back (the server echoes to every session in the room, the sender
// included). The outcome goes into <body data-result="ok|fail"> and document.title, which
// tests/consumers/app/run-pages.mjs waits for.
//
// Query parameters: server (the realtime endpoint; default /realtime on this origin) and
// transport (force one; default all three).
export async function probe(RealtimeClient, consumer) {
    const report = (result, detail) => {
        document.title = `${result} ${consumer}: ${detail}`;
        document.getElementById('result').textContent = document.title;
        document.body.dataset.result = result;
    };
    try {
        const params = new URLSearchParams(location.search);
        const endpoint = new URL(params.get('server') ?? '/realtime', location.href);
        const token = `${consumer}-${Math.random().toString(36).slice(2)}`;
        endpoint.searchParams.set('room', `consumer-${token}`);
        const options = params.has('transport') ? { transports: [params.get('transport')] } : {};
        const client = new RealtimeClient(endpoint.href, options);
        client.on('error', (error) => console.error('realtime-client error event:', error));
        const message = new Promise((resolve) => {
            client.on('message', (data, info) => data?.token === token && resolve(info));
        });
        const event = new Promise((resolve) => {
            client.on('echo', (data, info) => data === token && resolve(info));
        });
        await client.connect();
        await client.send({ token });
        await client.emit('echo', token);
        const [messageInfo, eventInfo] = await Promise.all([message, event]);
        report('ok', `over ${client.transport}: message kind=${messageInfo.kind} seq=${messageInfo.seq}, ` +
            `event '${eventInfo.event}' kind=${eventInfo.kind} seq=${eventInfo.seq}, session ${client.sessionId}`);
        client.close();
    } catch (error) {
        report('fail', String(error?.stack ?? error));
    }
}
