// Socket.IO 4 server for `parley-loadtest --protocol socketio`: a room per channel.
//   "join" (room, ack)     joins the room, then acknowledges
//   "pub"  (room, payload) sends "msg" (payload) to the room's other members
// Usage: node server.mjs PORT   (listens on 127.0.0.1 only)
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 3000);
const http = createServer();
const io = new Server(http, { transports: ["websocket"], perMessageDeflate: false });
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack();
  });
  socket.on("pub", (room, payload) => {
    socket.to(room).emit("msg", payload);
  });
});
http.listen(port, "127.0.0.1", () => console.log(`socket.io listening on 127.0.0.1:${port}`));
